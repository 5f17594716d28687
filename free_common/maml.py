"""Functional MAML (Finn et al., ICML 2017) on a parameter dict with ``torch.func``.

The model stays an ordinary ``nn.Module``: its adapted weights live in a
``dict[str, Tensor]`` and every forward goes through
:func:`torch.func.functional_call`, so the same module serves the meta-learner, the
fine-tuning evaluation and the ONNX export.

Used by the real-data MAML ceiling (``scripts/bench/reference.py``) and by FREE's
cross-task memory-bank replay (``free_common/free/README.md``: 5 inner SGD steps
at lr 0.01, second order, meta-batch of tasks, Adam 1e-3 on the initialisation). These
signatures are shared API: keep them stable.

The meta-learner's head has ``n_way`` outputs: the labels of every episode run
0..n_way-1, so one head serves every task. Build the meta-learner with
``batch_stats=True`` (BatchNorm always normalises with the statistics of the batch it
sees, the MAML convention); with running statistics, every functional forward would also
update the module's buffers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from free_common.data.episodes import Episode

__all__ = [
    "MamlError",
    "MamlStepResult",
    "MamlTrainer",
    "Params",
    "inner_adapt",
    "maml_outer_loss",
    "model_params",
    "sgd_step",
]

logger = logging.getLogger(__name__)

Params = dict[str, Tensor]
"""Parameter name (as in ``model.named_parameters()``) -> tensor."""


class MamlError(ValueError):
    """Bad MAML settings or a task the model cannot classify (e.g. too few head outputs)."""


def model_params(model: nn.Module) -> Params:
    """The model's own parameters as a dict, still attached to the module (no copy)."""
    return dict(model.named_parameters())


def inner_adapt(
    model: nn.Module,
    params: Params,
    images: Tensor,
    labels: Tensor,
    *,
    steps: int,
    lr: float,
    create_graph: bool,
) -> Params:
    """Take ``steps`` plain SGD steps on the cross-entropy of ``(images, labels)``.

    Each step is ``p <- p - lr * dL/dp`` with ``L = CE(functional_call(model, params,
    images), labels)`` averaged over the batch.

    Args:
        model: the module that defines the computation; its own parameters are not used
            (``params`` replaces them) and never modified.
        params: starting weights; every tensor must require grad. Missing names fall back
            to the module's own tensors (held fixed).
        images: support images, float in [0, 1], shape (B, C, H, W).
        labels: int64 class indices, shape (B,), values < the model's output count.
        steps: number of SGD steps (0 returns ``params`` unchanged).
        lr: SGD learning rate.
        create_graph: keep the graph of the gradients themselves, so that a later
            backward differentiates through the steps (second-order MAML). ``False``
            treats each step's gradient as a constant (first-order MAML / plain
            fine-tuning): the result still depends on ``params`` through the identity.

    Returns:
        The adapted weights, same names and shapes as ``params``.

    Raises:
        MamlError: negative ``steps``, a parameter that does not require grad, or a
            batch/label shape mismatch.
    """
    if steps < 0:
        raise MamlError(f"steps must be >= 0, got {steps}")
    if images.shape[0] != labels.shape[0] or labels.ndim != 1:
        raise MamlError(f"{images.shape[0]} images for labels of shape {tuple(labels.shape)}")
    frozen = [name for name, p in params.items() if not p.requires_grad]
    if steps and frozen:
        raise MamlError(f"parameters do not require grad: {', '.join(frozen)}")
    names = list(params)
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.cross_entropy(functional_call(model, params, (images,)), labels)
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
            params = {n: sgd_step(params[n], g, lr) for n, g in zip(names, grads, strict=True)}
    return params


def sgd_step(param: Tensor, grad: Tensor, lr: float) -> Tensor:
    """``param - lr * grad`` laid out in memory as ``param`` is (differentiable).

    The layout matters on CPU: a convolution whose weight is channels-last runs several
    times faster on channels-last activations. A weight with one input channel, such as
    the first convolution of a grey-image model, of shape (C_out, 1, k, k), is both
    contiguous and channels-last; the arithmetic returns it with contiguous strides, and
    from the first SGD step on every convolution of the model then ran in the slow layout
    (grey-image fine-tuning 1.3x slower at 1-shot, 1.7x at 5-shot). The step's values are
    the same either way; the convolutions after it differ only in float rounding.

    Args:
        param: the weight, any shape and layout.
        grad: its gradient, same shape.
        lr: the step size.

    Returns:
        A new tensor with ``param``'s shape and strides.
    """
    stepped = param - lr * grad
    if stepped.stride() == param.stride():
        return stepped
    return torch.empty_like(param).copy_(stepped)


def _check_head(logits: Tensor, n_way: int) -> None:
    if logits.ndim != 2 or logits.shape[1] < n_way:
        raise MamlError(
            f"model gives logits of shape {tuple(logits.shape)} for a {n_way}-way task: "
            f"the head needs at least {n_way} outputs"
        )


def _model_device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def maml_outer_loss(
    model: nn.Module,
    tasks: Sequence[Episode],
    *,
    inner_steps: int,
    inner_lr: float,
    first_order: bool = False,
) -> tuple[Tensor, float]:
    """MAML meta-objective: query loss after adapting the model's weights on each support set.

    For each task, :func:`inner_adapt` runs from the model's current parameters on the
    support set; the adapted weights classify the query set. The loss is the mean of the
    tasks' query cross-entropies and is differentiable w.r.t. ``model.parameters()``
    (through the inner steps when ``first_order`` is False).

    Args:
        model: the meta-learner (head with at least ``n_way`` outputs).
        tasks: episodes; moved to the model's device here.
        inner_steps: SGD steps per task (5 in MAML/FREE training).
        inner_lr: inner SGD learning rate (0.01).
        first_order: drop second-order terms (FOMAML). Default: full second order.

    Returns:
        ``(loss, query_accuracy)``: scalar loss tensor with graph, and the mean query
        accuracy over the tasks, a float in [0, 1] (no graph).
    """
    if not tasks:
        raise MamlError("maml_outer_loss needs at least one task")
    device = _model_device(model)
    start = model_params(model)
    losses: list[Tensor] = []
    correct = 0
    total = 0
    outputs = getattr(model, "num_classes", None)
    for task in tasks:
        if isinstance(outputs, int) and outputs < task.n_way:
            raise MamlError(
                f"model has {outputs} outputs for a {task.n_way}-way task: "
                f"the head needs at least {task.n_way} outputs"
            )
        episode = task.to(device)
        fast = inner_adapt(
            model,
            start,
            episode.support_images,
            episode.support_labels,
            steps=inner_steps,
            lr=inner_lr,
            create_graph=not first_order,
        )
        logits = functional_call(model, fast, (episode.query_images,))
        _check_head(logits, len(episode.classes))
        losses.append(F.cross_entropy(logits, episode.query_labels))
        correct += int((logits.argmax(dim=1) == episode.query_labels).sum())
        total += int(episode.query_labels.numel())
    return torch.stack(losses).mean(), correct / max(total, 1)


@dataclass(frozen=True)
class MamlStepResult:
    """What one meta-update reports.

    Attributes:
        loss: mean query cross-entropy of the meta-batch (before the update).
        accuracy: mean query accuracy of the meta-batch, in [0, 1].
    """

    loss: float
    accuracy: float


class MamlTrainer:
    """One-call MAML meta-updates on a model, with a checkpointable optimiser.

    ``step(tasks)`` computes :func:`maml_outer_loss` on a meta-batch and takes one
    optimiser step on the model's parameters (the initialisation). Pass ``optimizer`` to
    share one outer optimiser with another update rule (FREE uses a single Adam for its
    distillation step and for the replay); otherwise Adam(``outer_lr``) is created.

    Args:
        model: the meta-learner, updated in place.
        inner_steps: inner SGD steps per task (5).
        inner_lr: inner SGD learning rate (0.01).
        outer_lr: Adam learning rate when no optimiser is given (1e-3).
        first_order: FOMAML instead of second-order MAML.
        optimizer: an optimiser over ``model.parameters()``, or None.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        inner_steps: int = 5,
        inner_lr: float = 0.01,
        outer_lr: float = 1e-3,
        first_order: bool = False,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        if inner_steps < 0 or inner_lr <= 0 or outer_lr <= 0:
            raise MamlError(
                f"need inner_steps >= 0 and positive learning rates, got inner_steps="
                f"{inner_steps}, inner_lr={inner_lr}, outer_lr={outer_lr}"
            )
        self.model = model
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.first_order = first_order
        self.optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=outer_lr)
        self.steps_done = 0

    def step(self, tasks: Sequence[Episode]) -> MamlStepResult:
        """One meta-update on ``tasks``; returns the meta-batch's pre-update loss/accuracy."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss, accuracy = maml_outer_loss(
            self.model,
            tasks,
            inner_steps=self.inner_steps,
            inner_lr=self.inner_lr,
            first_order=self.first_order,
        )
        loss.backward()  # type: ignore[no-untyped-call]
        self.optimizer.step()
        self.steps_done += 1
        return MamlStepResult(loss=float(loss.detach()), accuracy=accuracy)

    def state_dict(self) -> dict[str, Any]:
        """Optimiser state and step count (the model's weights are saved by its owner)."""
        return {"optimizer": self.optimizer.state_dict(), "steps_done": self.steps_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps_done = int(state["steps_done"])
