"""Cross-teacher distillation: every recovered image is labelled by many teachers.

FREE's published meta-learner step (``meta_learner.py``) distils each teacher only on its
own recovered images, through one shared ``n_way`` head whose outputs mean different
classes for every teacher. Here the student instead learns to reproduce *several*
teachers' outputs on the *same* images, drawn from the memory bank (so from any teacher's
recovered tasks), with one small linear head per teacher on the student's features:

    L(phi, {W_t}) = mean_{t in S} T^2 * KL( softmax(M_t(x) / T) || softmax(W_t f_phi(x) / T) )

for a batch x of augmented bank images and a set S of teachers. The recovered images
serve as probes of the teachers' functions rather than as examples of their classes: a
teacher's response to another teacher's classes still tells how it sees them. Matching
many teachers through one feature extractor f_phi amalgamates them (knowledge
amalgamation, Shen et al., AAAI 2019; multi-teacher distillation with task heads), and the
heads keep each teacher's label order its own, so no label-permutation noise reaches the
shared features.

The teacher heads are training scaffolding: they are never exported; the meta-learner's
own ``n_way`` head is left as it is (every meta-test protocol here starts its head from
zero or from the support prototypes, or uses nearest centroids).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from free_common.config import CrossDistillConfig
from free_common.free.augment import augment, to_model_input
from free_common.free.distillation import kd_loss
from free_common.free.errors import check_finite
from free_common.free.teachers import Teacher
from free_common.models import Classifier

__all__ = ["TeacherHeads", "cross_distill_step"]


class TeacherHeads:
    """One linear head per teacher on the student's features, with their own Adam.

    Heads are created the first time a teacher is distilled, initialised from ``rng`` (so
    a seeded run is reproducible), and added to the optimiser as a new parameter group;
    the creation order is kept so that a checkpoint restores heads and optimiser state
    exactly.

    Args:
        num_features: the student's feature width F.
        lr: Adam learning rate of the heads.
        device: where the heads live.
        init: ``"ridge"`` (fit to the first batch) or ``"random"``.
    """

    def __init__(
        self, num_features: int, lr: float, device: torch.device, init: str = "ridge"
    ) -> None:
        self.num_features = num_features
        self.lr = lr
        self.device = device
        self.init = init
        self.heads: dict[str, nn.Linear] = {}
        self.optimizer: torch.optim.Adam | None = None

    def __len__(self) -> int:
        """Heads created so far."""
        return len(self.heads)

    def head(
        self, teacher_id: str, features: Tensor, logits: Tensor, rng: torch.Generator
    ) -> nn.Linear:
        """The head of ``teacher_id``, created on first use from this batch.

        Args:
            teacher_id: the teacher.
            features: the student's features of the batch, (B, F).
            logits: the teacher's logits on the same images, (B, C).
            rng: draws a random head's weights.
        """
        head = self.heads.get(teacher_id)
        if head is None:
            head = nn.Linear(self.num_features, logits.shape[1])
            with torch.no_grad():
                weight, bias = (
                    ridge_fit(features.detach(), logits.detach())
                    if self.init == "ridge"
                    else _uniform_head(self.num_features, logits.shape[1], rng)
                )
                head.weight.copy_(weight)
                head.bias.copy_(bias)
            head = head.to(self.device)
            self._register(teacher_id, head)
        return head

    def _register(self, teacher_id: str, head: nn.Linear) -> None:
        self.heads[teacher_id] = head
        if self.optimizer is None:
            self.optimizer = torch.optim.Adam(head.parameters(), lr=self.lr)
        else:
            self.optimizer.add_param_group({"params": list(head.parameters())})

    def zero_grad(self) -> None:
        """Clear every head's gradient."""
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        """One Adam step on every head that has a gradient."""
        if self.optimizer is not None:
            self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        """Head ids in creation order, their weights, their output counts, optimiser state."""
        return {
            "ids": list(self.heads),
            "classes": [h.out_features for h in self.heads.values()],
            "weights": [h.state_dict() for h in self.heads.values()],
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (replaces every head)."""
        self.heads, self.optimizer = {}, None
        for teacher_id, classes, weights in zip(
            state["ids"], state["classes"], state["weights"], strict=True
        ):
            head = nn.Linear(self.num_features, int(classes)).to(self.device)
            head.load_state_dict(weights)
            self._register(str(teacher_id), head)
        if self.optimizer is not None and state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])


def ridge_fit(features: Tensor, targets: Tensor, ridge: float = 1e-3) -> tuple[Tensor, Tensor]:
    """Least-squares linear map with a small ridge: features (B, F), targets (B, C).

    The ridge is ``ridge`` times the mean feature energy, so it does not depend on scale.

    Returns:
        ``(weight, bias)`` of shapes (C, F) and (C,).
    """
    x = torch.cat([features, torch.ones(features.shape[0], 1, device=features.device)], 1)
    gram = x.T @ x  # (F+1, F+1)
    scale = ridge * float(gram.diagonal()[:-1].mean().clamp_min(1e-12))
    solution = torch.linalg.solve(
        gram + scale * torch.eye(gram.shape[0], device=x.device), x.T @ targets
    )  # (F+1, C)
    return solution[:-1].T.contiguous(), solution[-1].contiguous()


def _uniform_head(
    num_features: int, num_classes: int, rng: torch.Generator
) -> tuple[Tensor, Tensor]:
    """nn.Linear's default initial range, drawn from ``rng``: (C, F) and (C,)."""
    bound = 1.0 / num_features**0.5
    weight = torch.rand(num_classes, num_features, generator=rng) * 2 * bound - bound
    return weight, torch.rand(num_classes, generator=rng) * 2 * bound - bound


def cross_distill_step(
    learner: Classifier,
    optimizer: torch.optim.Optimizer,
    heads: TeacherHeads,
    teachers: Sequence[Teacher],
    images: Tensor,
    config: CrossDistillConfig,
    rng: torch.Generator,
    *,
    crop_padding: int,
    flip: bool,
) -> float:
    """One update of the student and the heads on a batch of bank images.

    Args:
        learner: the student (meta-learner), updated in place by ``optimizer``.
        optimizer: the student's optimiser (FREE's outer Adam).
        heads: the per-teacher heads, updated in place.
        teachers: the teachers that label this batch (frozen).
        images: bank images in [0, 1], (B, C, S, S) at the bank's resolution.
        config: temperature.
        rng: draws the augmentation.
        crop_padding: padding of the random crop.
        flip: random horizontal flips.

    Returns:
        The mean KD loss over the teachers (before the step).

    Raises:
        NonFiniteLossError: the loss became NaN/Inf (term ``cross_kd/kd``).
    """
    spec = learner.spec
    x = augment(images, padding=crop_padding, flip=flip, generator=rng)
    student_in = to_model_input(x, spec.image_size, spec.in_channels)
    learner.train()
    features = learner.forward_features(student_in.contiguous(memory_format=torch.channels_last))
    losses = []
    for teacher in teachers:
        with torch.no_grad():
            target = teacher.model(
                to_model_input(x, teacher.spec.image_size, teacher.spec.in_channels)
            )
        head = heads.head(teacher.teacher_id, features, target, rng)
        losses.append(kd_loss(head(features), target, config.temperature))
    loss = torch.stack(losses).mean()
    check_finite(loss, "cross_kd/kd")
    optimizer.zero_grad(set_to_none=True)
    heads.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    heads.step()
    return float(loss.detach())
