"""Meta-test protocol: N-way K-shot accuracy of an initialisation over many sampled tasks.

Two adaptation rules, both applied to a *copy* of the model (the input is never touched):

- ``"finetune"`` (the MAML protocol of FREE's public code): start from
  the initialisation and take ``steps`` plain SGD steps (default 10, lr 0.01) on the
  support cross-entropy, updating every parameter; then classify the query set.
- ``"proto"``: nearest class centroid (squared Euclidean) of ``forward_features``; the
  head is unused.

BatchNorm follows the MAML convention: the copy is rebuilt with ``batch_stats=True`` from
the model's spec, so every forward normalises with the statistics of its own batch and
the source model's running statistics are ignored. Fine-tuning forwards the support set
(N*K images) for each step and then the query set (N*Q images) as one batch; proto mode
embeds support and query together in one batch of N*(K+Q) images, so both share one set
of statistics (transductive, like the MAML query batch).

Head (``head=``): fine-tuning needs ``n_way`` outputs, and where they start matters.

- ``"learned"`` (the published protocol): a head with ``n_way`` outputs (a meta-learner's)
  is kept; another output count (a client's classifier, or a 5-way meta-learner meeting a
  20-way task) gets a freshly initialised ``n_way`` head (``reset_classifier``), seeded
  from ``seed`` so every call is identical.
- ``"zero"``: all head weights and biases start at zero (Kao et al., ICLR 2022), so no
  class is favoured before the first step.
- ``"proto"`` (ProtoMAML, Triantafillou et al., ICLR 2020): row c of the head starts at
  ``2 p_c`` and its bias at ``-||p_c||^2``, with ``p_c`` the mean support feature of class
  c; before any step the head is then the nearest-centroid classifier.

A head with a fixed meaning for each output (a teacher's or a meta-learner's) names
different classes in every task, so ``"zero"`` and ``"proto"`` remove label noise that
``"learned"`` keeps.

Reported figure: mean task accuracy and the 95% confidence half-width
``1.96 * std / sqrt(n_tasks)`` (population std, ``ddof=0``), as in the FREE/MAML code.
Accuracies are fractions in [0, 1]; :meth:`EvalResult.format` prints percentages.

Pairing: the tasks depend only on ``(data, n_way, k_shot, q_query, seed)``, so every
method evaluated with the same seed sees the same tasks. Model selection is done on
meta-val only: evaluate candidates on the val split with :func:`select_best` (or
:func:`evaluate` directly), then report the chosen one once on meta-test.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor
from torch.func import functional_call
from tqdm import tqdm

from free_common.data.base import ClassImages
from free_common.data.episodes import Episode, EpisodeSampler
from free_common.maml import inner_adapt
from free_common.models import Classifier, build_model
from free_common.runtime import pick_device

__all__ = [
    "HEADS",
    "EvalMode",
    "EvalResult",
    "EvaluationError",
    "FinetuneChoice",
    "HeadInit",
    "LrSelection",
    "confidence_interval",
    "evaluate",
    "evaluation_copy",
    "select_best",
    "select_finetune",
    "select_finetune_lr",
]

logger = logging.getLogger(__name__)

EvalMode = Literal["finetune", "proto"]
MODES: tuple[str, ...] = ("finetune", "proto")
HeadInit = Literal["learned", "zero", "proto"]
HEADS: tuple[str, ...] = ("learned", "zero", "proto")


class EvaluationError(ValueError):
    """Bad evaluation settings, or a model whose weights do not fit its own spec."""


@dataclass(frozen=True)
class EvalResult:
    """Accuracy of one initialisation under one protocol.

    Attributes:
        mean: mean task accuracy, in [0, 1].
        ci95: 95% confidence half-width of the mean, ``1.96 * std / sqrt(n_tasks)``.
        accuracies: per-task query accuracy, shape (n_tasks,), in task order.
        n_tasks: number of tasks.
        n_way: classes per task.
        k_shot: support images per class.
        q_query: query images per class.
        mode: ``"finetune"`` or ``"proto"``.
        head: how the fine-tuning head started (``"learned"``, ``"zero"``, ``"proto"``;
            ``"none"`` in proto mode).
        steps: fine-tuning SGD steps (0 in proto mode).
        lr: fine-tuning learning rate.
        seed: task-sampling seed.
        seconds: wall time of the evaluation.
        domains: the domain of each task, shape (n_tasks,), when the tasks were drawn
            within one domain each (``by_domain``); empty otherwise.
    """

    mean: float
    ci95: float
    accuracies: npt.NDArray[np.float64]
    n_tasks: int
    n_way: int
    k_shot: int
    q_query: int
    mode: str
    steps: int
    lr: float
    seed: int
    seconds: float
    head: str = "learned"
    domains: tuple[str, ...] = ()

    def of_domain(self, domain: str) -> EvalResult:
        """The result on one domain's tasks alone: their accuracies, mean and CI.

        ``seconds`` is the whole evaluation's time times the domain's share of the tasks.

        Raises:
            EvaluationError: the tasks were not drawn by domain, or none is ``domain``'s.
        """
        picked = [i for i, d in enumerate(self.domains) if d == domain]
        if not picked:
            known = ", ".join(dict.fromkeys(self.domains)) or "none: tasks not drawn by domain"
            raise EvaluationError(f"no task of domain {domain!r} (domains: {known})")
        accuracies = self.accuracies[picked]
        mean, ci95 = confidence_interval(accuracies)
        return dataclasses.replace(
            self,
            mean=mean,
            ci95=ci95,
            accuracies=accuracies,
            n_tasks=len(picked),
            seconds=self.seconds * len(picked) / self.n_tasks,
            domains=(domain,) * len(picked),
        )

    def format(self) -> str:
        """``"47.31 ± 0.85"``: mean and CI in percent."""
        return f"{100 * self.mean:.2f} ± {100 * self.ci95:.2f}"

    def to_dict(self) -> dict[str, float | int | str]:
        """JSON-ready summary (without the per-task accuracies)."""
        return {
            "mean": self.mean,
            "ci95": self.ci95,
            "n_tasks": self.n_tasks,
            "n_way": self.n_way,
            "k_shot": self.k_shot,
            "q_query": self.q_query,
            "mode": self.mode,
            "head": self.head,
            "steps": self.steps,
            "lr": self.lr,
            "seed": self.seed,
            "seconds": self.seconds,
        }


def confidence_interval(accuracies: npt.ArrayLike) -> tuple[float, float]:
    """Mean and 95% half-width ``1.96 * std / sqrt(n)`` (``ddof=0``) of per-task accuracies."""
    values = np.asarray(accuracies, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise EvaluationError(f"need a non-empty 1-D array of accuracies, got {values.shape}")
    return float(values.mean()), float(1.96 * values.std() / math.sqrt(values.size))


def evaluation_copy(
    model: Classifier, n_way: int, *, seed: int, need_head: bool = True
) -> Classifier:
    """A batch-statistics copy of ``model`` with its weights, ready for meta-testing.

    Args:
        model: any classifier built by :func:`free_common.models.build_model`.
        n_way: classes per task.
        seed: seeds the replacement head, if one is needed.
        need_head: replace a head whose output count differs from ``n_way``.

    Returns:
        A new model in eval mode on the CPU, its weights in channels-last layout (the
        convolutions run several times faster on CPU; values are unchanged); ``model``
        is not modified.
    """
    copy = build_model(model.spec, batch_stats=True)
    source = model.state_dict()
    wanted = copy.state_dict()
    missing = [k for k in wanted if k not in source]
    if missing:
        raise EvaluationError(f"model lacks tensors its spec needs: {', '.join(missing)}")
    copy.load_state_dict({k: source[k].detach().to("cpu") for k in wanted})
    if need_head and model.spec.num_classes != n_way:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            copy.reset_classifier(n_way)
    return copy.to(memory_format=torch.channels_last).eval()


def initial_head(
    model: Classifier, support_images: Tensor, support_labels: Tensor, n_way: int, head: str
) -> tuple[Tensor, Tensor]:
    """The ``"zero"`` or ``"proto"`` head of an episode, before fine-tuning.

    Args:
        model: the (batch-statistics) model; its backbone embeds the support set.
        support_images: (N*K, C, H, W) in [0, 1].
        support_labels: (N*K,) int64 in 0..n_way-1.
        n_way: classes of the episode.
        head: ``"zero"`` or ``"proto"``.

    Returns:
        ``(weight, bias)`` of shapes (n_way, F) and (n_way,).
    """
    if head == "zero":
        return (
            torch.zeros(n_way, model.num_features, device=support_images.device),
            torch.zeros(n_way, device=support_images.device),
        )
    with torch.no_grad():
        features = model.forward_features(support_images)  # (N*K, F)
        prototypes = _class_means(features, support_labels, n_way)  # (N, F)
    return 2 * prototypes, -prototypes.pow(2).sum(dim=1)


def _class_means(features: Tensor, labels: Tensor, n_way: int) -> Tensor:
    """Mean feature of each class: features (B, F), labels (B,) -> (n_way, F)."""
    sums = torch.zeros(n_way, features.shape[1], device=features.device, dtype=features.dtype)
    sums.index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=n_way).clamp_min(1)
    return sums / counts.unsqueeze(1).to(features.dtype)


def _finetune_accuracy(
    model: Classifier, episode: Episode, *, steps: int, lr: float, head: str
) -> float:
    start = {n: p.detach().requires_grad_(True) for n, p in model.named_parameters()}
    if head != "learned":
        weight, bias = initial_head(
            model, episode.support_images, episode.support_labels, episode.n_way, head
        )
        start["head.weight"] = weight.requires_grad_(True)
        start["head.bias"] = bias.requires_grad_(True)
    fast = inner_adapt(
        model,
        start,
        episode.support_images,
        episode.support_labels,
        steps=steps,
        lr=lr,
        create_graph=False,
    )
    with torch.no_grad():
        logits = functional_call(
            model, {n: t.detach() for n, t in fast.items()}, (episode.query_images,)
        )
        return float((logits.argmax(dim=1) == episode.query_labels).float().mean())


def _proto_accuracy(model: Classifier, episode: Episode, n_way: int) -> float:
    n_support = episode.support_images.shape[0]
    with torch.no_grad():
        images = torch.cat([episode.support_images, episode.query_images])
        features = model.forward_features(images)  # (N*(K+Q), F)
        support, query = features[:n_support], features[n_support:]
        prototypes = _class_means(support, episode.support_labels, n_way)
        distances = _squared_distances(query, prototypes)  # (N*Q, N)
        return float((distances.argmin(dim=1) == episode.query_labels).float().mean())


def _squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """Squared Euclidean distances between rows: x (A, F), y (B, F) -> (A, B)."""
    return (x.unsqueeze(1) - y.unsqueeze(0)).pow(2).sum(dim=2)


def _check_settings(
    data: ClassImages,
    n_way: int,
    k_shot: int,
    q_query: int,
    n_tasks: int,
    mode: str,
    steps: int,
    head: str,
) -> None:
    if mode not in MODES:
        raise EvaluationError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
    if head not in HEADS:
        raise EvaluationError(f"unknown head {head!r}: expected one of {', '.join(HEADS)}")
    for name, value, low in (("n_way", n_way, 2), ("k_shot", k_shot, 1), ("q_query", q_query, 1)):
        if value < low:
            raise EvaluationError(f"{name} must be >= {low}, got {value}")
    if n_tasks < 1 or steps < 0:
        raise EvaluationError(f"need n_tasks >= 1 and steps >= 0, got {n_tasks}, {steps}")
    if data.num_classes < n_way:
        raise EvaluationError(f"{data.name} has {data.num_classes} classes, fewer than {n_way}")


def evaluate(
    model: Classifier,
    data: ClassImages,
    *,
    n_way: int = 5,
    k_shot: int,
    q_query: int = 15,
    n_tasks: int = 600,
    mode: EvalMode = "finetune",
    head: HeadInit = "learned",
    steps: int = 10,
    lr: float = 0.01,
    seed: int = 0,
    progress: bool = False,
    device: torch.device | str | None = None,
    by_domain: bool = False,
) -> EvalResult:
    """Meta-test ``model`` as an initialisation on ``n_tasks`` tasks sampled from ``data``.

    Args:
        model: the initialisation; cloned, never modified (see module docstring for BN
            and head handling).
        data: the split to sample tasks from (meta-val for selection, meta-test to report).
        n_way: classes per task.
        k_shot: support images per class.
        q_query: query images per class.
        n_tasks: number of tasks (600 for reported figures).
        mode: ``"finetune"`` (full fine-tuning, MAML protocol) or ``"proto"``.
        head: where the fine-tuning head starts: ``"learned"``, ``"zero"`` or
            ``"proto"`` (module docstring); ignored in proto mode.
        steps: SGD steps on the support set in finetune mode (10).
        lr: SGD learning rate in finetune mode (0.01).
        seed: task-sampling seed; the same seed gives the same tasks to every model.
        progress: show a tqdm bar.
        device: where to run; default :func:`free_common.runtime.pick_device`.
        by_domain: on a split of several domains, draw each task within one domain, the
            domains in turn (:class:`~free_common.data.episodes.EpisodeSampler`); the
            result then names each task's domain (:meth:`EvalResult.of_domain`).

    Returns:
        The per-task accuracies and their mean and 95% CI.
    """
    _check_settings(data, n_way, k_shot, q_query, n_tasks, mode, steps, head)
    spec = model.spec
    if data.image_shape != (spec.in_channels, spec.image_size, spec.image_size):
        raise EvaluationError(
            f"{data.name} images are {data.image_shape}, the model expects "
            f"{(spec.in_channels, spec.image_size, spec.image_size)}"
        )
    target = torch.device(device) if device is not None else pick_device()
    learner = evaluation_copy(model, n_way, seed=seed, need_head=mode == "finetune").to(target)
    sampler = EpisodeSampler(
        data, n_way=n_way, k_shot=k_shot, q_query=q_query, seed=seed, by_domain=by_domain
    )
    accuracies = np.empty(n_tasks, dtype=np.float64)
    domains: list[str] = []
    started = time.perf_counter()
    bar = tqdm(
        sampler.episodes(n_tasks),
        total=n_tasks,
        desc=f"{mode} {n_way}w{k_shot}s",
        disable=not progress,
        leave=False,
    )
    for i, task in enumerate(bar):
        domains.append(task.domain)
        episode = _channels_last(task.to(target))
        if mode == "finetune":
            accuracies[i] = _finetune_accuracy(learner, episode, steps=steps, lr=lr, head=head)
        else:
            accuracies[i] = _proto_accuracy(learner, episode, n_way)
    mean, ci95 = confidence_interval(accuracies)
    seconds = time.perf_counter() - started
    logger.info(
        "%s%s %d-way %d-shot on %s: %.2f ± %.2f%% over %d tasks (%.1f s)",
        mode,
        f" ({head} head, lr {lr:g})" if mode == "finetune" else "",
        n_way,
        k_shot,
        data.name,
        100 * mean,
        100 * ci95,
        n_tasks,
        seconds,
    )
    return EvalResult(
        mean=mean,
        ci95=ci95,
        accuracies=accuracies,
        n_tasks=n_tasks,
        n_way=n_way,
        k_shot=k_shot,
        q_query=q_query,
        mode=mode,
        steps=steps if mode == "finetune" else 0,
        lr=lr,
        seed=seed,
        seconds=seconds,
        head=head if mode == "finetune" else "none",
        domains=tuple(domains) if sampler.groups else (),
    )


def _channels_last(episode: Episode) -> Episode:
    """The episode with its image tensors in channels-last layout (same values)."""
    layout = torch.channels_last
    return Episode(
        episode.support_images.contiguous(memory_format=layout),
        episode.support_labels,
        episode.query_images.contiguous(memory_format=layout),
        episode.query_labels,
        episode.classes,
        episode.domain,
    )


def select_best(
    candidates: Mapping[str, Classifier],
    val_data: ClassImages,
    *,
    k_shot: int,
    n_way: int = 5,
    q_query: int = 15,
    mode: EvalMode = "finetune",
    n_tasks: int = 600,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> tuple[str, dict[str, EvalResult]]:
    """Pick the candidate with the highest meta-val accuracy (ties: the first one).

    Every candidate is evaluated on the same tasks (same ``seed``). Pass the **val**
    split; report the winner afterwards with :func:`evaluate` on the test split.

    Returns:
        ``(best_name, results)`` with one :class:`EvalResult` per candidate.
    """
    if not candidates:
        raise EvaluationError("select_best needs at least one candidate")
    results = {
        name: evaluate(
            model,
            val_data,
            n_way=n_way,
            k_shot=k_shot,
            q_query=q_query,
            n_tasks=n_tasks,
            mode=mode,
            seed=seed,
            device=device,
        )
        for name, model in candidates.items()
    }
    best = max(results, key=lambda name: results[name].mean)
    return best, results


@dataclass(frozen=True)
class LrSelection:
    """The fine-tuning learning rate chosen for one initialisation on meta-val.

    Attributes:
        lr: the chosen learning rate (highest mean meta-val accuracy; ties: the first
            in the grid's order).
        val: grid learning rate -> mean meta-val accuracy, in grid order.
        at_edge: the choice is the grid's smallest or largest value (the optimum may
            lie outside the grid).
    """

    lr: float
    val: dict[float, float]
    at_edge: bool


def select_finetune_lr(
    model: Classifier,
    val_data: ClassImages,
    *,
    k_shot: int,
    lrs: tuple[float, ...],
    n_tasks: int,
    seed: int,
    n_way: int = 5,
    q_query: int = 15,
    steps: int = 10,
    device: torch.device | str | None = None,
) -> LrSelection:
    """Choose the fine-tuning learning rate of ``model`` on meta-val tasks.

    Full fine-tuning with batch-statistics BatchNorm makes every convolution scale-
    invariant, so a fixed learning rate acts as a different step size on initialisations
    of different weight norms (effective step ~ lr / ||W||^2). Choosing the rate per
    initialisation on meta-val, then reporting meta-test once at that rate, removes that
    confound. Every rate is tried on the same tasks (same ``seed``).

    Args:
        model: the initialisation; never modified.
        val_data: the meta-val split (never meta-test).
        k_shot: support images per class.
        lrs: candidate learning rates, each > 0, no repeats.
        n_tasks: meta-val tasks per candidate.
        seed: task-sampling seed.
        n_way: classes per task.
        q_query: query images per class.
        steps: SGD fine-tuning steps.
        device: where to run; default :func:`free_common.runtime.pick_device`.

    Raises:
        EvaluationError: an empty grid, a repeated or non-positive rate.
    """
    choice = select_finetune(
        model,
        val_data,
        k_shot=k_shot,
        lrs=lrs,
        heads=("learned",),
        n_tasks=n_tasks,
        seed=seed,
        n_way=n_way,
        q_query=q_query,
        steps=steps,
        device=device,
    )
    return LrSelection(choice.lr, {lr: v for (_, lr), v in choice.val.items()}, choice.at_edge)


@dataclass(frozen=True)
class FinetuneChoice:
    """The fine-tuning rate and head start chosen for one initialisation on meta-val.

    Attributes:
        lr: the chosen learning rate.
        head: the chosen head start (``"learned"``, ``"zero"`` or ``"proto"``).
        val: ``(head, lr)`` -> mean meta-val accuracy, in grid order (heads outer).
        at_edge: the chosen rate is the grid's smallest or largest (the optimum may lie
            outside the grid).
        chosen_accuracies: per-task meta-val accuracies at the chosen point, shape
            (n_tasks,): the same tasks for every model chosen with the same seed, so two
            models' choices compare task by task.
    """

    lr: float
    head: str
    val: dict[tuple[str, float], float]
    at_edge: bool
    chosen_accuracies: npt.NDArray[np.float64] = field(
        default_factory=lambda: np.empty(0, dtype=np.float64)
    )

    def val_table(self) -> dict[str, dict[str, float]]:
        """JSON-ready ``{head: {str(lr): accuracy}}``."""
        table: dict[str, dict[str, float]] = {}
        for (head, lr), accuracy in self.val.items():
            table.setdefault(head, {})[str(lr)] = accuracy
        return table


def select_finetune(
    model: Classifier,
    val_data: ClassImages,
    *,
    k_shot: int,
    lrs: tuple[float, ...],
    heads: tuple[str, ...],
    n_tasks: int,
    seed: int,
    n_way: int = 5,
    q_query: int = 15,
    steps: int = 10,
    device: torch.device | str | None = None,
    by_domain: bool = False,
) -> FinetuneChoice:
    """Choose the fine-tuning rate and head start of ``model`` on meta-val tasks.

    Every ``(head, lr)`` pair is tried on the same tasks (same ``seed``); the best mean
    wins, ties going to the first in grid order (heads in the given order, then rates).
    Choosing both per initialisation is the tuning every method gets, baselines included.
    ``by_domain`` draws each task within one domain of a multi-domain split, as
    :func:`evaluate` does.

    Raises:
        EvaluationError: an empty or repeated grid, a non-positive rate, an unknown head.
    """
    if not lrs or len(set(lrs)) != len(lrs) or min(lrs) <= 0:
        raise EvaluationError(f"need distinct positive learning rates, got {list(lrs)}")
    if not heads or len(set(heads)) != len(heads) or not set(heads) <= set(HEADS):
        raise EvaluationError(f"need distinct heads among {', '.join(HEADS)}, got {list(heads)}")
    val: dict[tuple[str, float], float] = {}
    per_task: dict[tuple[str, float], npt.NDArray[np.float64]] = {}
    for head in heads:
        for lr in lrs:
            found = evaluate(
                model,
                val_data,
                n_way=n_way,
                k_shot=k_shot,
                q_query=q_query,
                n_tasks=n_tasks,
                head=head,  # type: ignore[arg-type]
                steps=steps,
                lr=lr,
                seed=seed,
                device=device,
                by_domain=by_domain,
            )
            val[(head, lr)], per_task[(head, lr)] = found.mean, found.accuracies
    head, lr = max(val, key=lambda key: val[key])  # max keeps the first of equal values
    at_edge = len(lrs) > 1 and lr in (min(lrs), max(lrs))
    return FinetuneChoice(lr, head, val, at_edge, per_task[(head, lr)])
