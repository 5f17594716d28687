"""The three meta-test protocols every method is reported under, on the same tasks.

- ``"tuned"`` (the headline): full fine-tuning (10 SGD steps) at the rate and head start
  that :func:`free_common.evaluation.select_finetune` chooses for *this* method on meta-val
  (``val_tasks`` tasks with their own seed); meta-test then runs once at that choice.
  Every method, baselines included, gets the same grid.
- ``"published"``: the data-free meta-learning papers' fixed rate 0.01 (FREE, TGR,
  BiDf-MKD and PURER fine-tune every method this way). The head is the method's learned
  one when it has ``n_way`` outputs; a task wider than the learned head (a 5-way
  meta-learner on 20-way tasks) starts from the support prototypes (ProtoMAML).
- ``"proto"``: nearest class centroid of the backbone's features, no fine-tuning: what an
  edge device runs with the exported prototype head.

Tasks depend only on the split, the task setting and the seed, so every method measured
with the same :class:`ProtocolSettings` sees exactly the same meta-val and meta-test tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import torch

from free_common.data.base import ClassImages
from free_common.evaluation import EvalResult, HeadInit, evaluate, select_finetune
from free_common.models import Classifier

__all__ = [
    "PROTOCOLS",
    "PUBLISHED_LR",
    "ProtocolResult",
    "ProtocolSettings",
    "TaskSetting",
    "meta_test",
    "published_head",
]

PROTOCOLS: tuple[str, ...] = ("tuned", "published", "proto")
PUBLISHED_LR = 0.01
"""The published protocol's fine-tuning rate (10 SGD steps), the same for every method."""


@dataclass(frozen=True)
class TaskSetting:
    """One N-way K-shot task family.

    Attributes:
        n_way: classes per task.
        k_shot: support images per class.
        q_query: query images per class.
    """

    n_way: int
    k_shot: int
    q_query: int = 15

    @property
    def name(self) -> str:
        """``"5w1s"``."""
        return f"{self.n_way}w{self.k_shot}s"


@dataclass(frozen=True)
class ProtocolSettings:
    """What the protocols need besides the model and the data.

    Attributes:
        test_tasks: meta-test tasks per (method, setting, protocol) (600).
        test_seed: meta-test task seed.
        val_tasks: meta-val tasks per grid point of the tuned protocol.
        val_seed: meta-val task seed of the tuned protocol.
        lrs: the tuned protocol's fine-tuning rates.
        heads: the tuned protocol's head starts (``"learned"`` is tried only where the
            model has ``n_way`` outputs).
        steps: fine-tuning SGD steps.
        protocols: which of :data:`PROTOCOLS` to run.
        by_domain: on a split of several domains, draw each meta-val and meta-test task
            within one domain, the domains in turn (FREE's multi-domain protocol,
            :class:`free_common.data.episodes.EpisodeSampler`); each result then splits by
            domain (:meth:`free_common.evaluation.EvalResult.of_domain`). No effect on a
            split of one domain.
    """

    test_tasks: int = 600
    test_seed: int = 0
    val_tasks: int = 100
    val_seed: int = 20_000
    lrs: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3)
    heads: tuple[str, ...] = ("learned", "zero", "proto")
    steps: int = 10
    protocols: tuple[str, ...] = PROTOCOLS
    by_domain: bool = False

    def __post_init__(self) -> None:
        """Refuse unknown protocols and empty sizes."""
        unknown = sorted(set(self.protocols) - set(PROTOCOLS))
        if unknown or not self.protocols:
            raise ValueError(f"protocols {list(self.protocols)}: expected some of {PROTOCOLS}")
        if self.test_tasks < 1 or self.val_tasks < 1:
            raise ValueError("test_tasks and val_tasks must be >= 1")


@dataclass(frozen=True)
class ProtocolResult:
    """One method under one protocol on one task setting.

    Attributes:
        protocol: ``"tuned"``, ``"published"`` or ``"proto"``.
        result: the meta-test result (per-task accuracies, mean, CI).
        lr: the fine-tuning rate used (None for ``"proto"``).
        head: the head start used (``"none"`` for ``"proto"``).
        val: the tuned protocol's meta-val grid ``{head: {lr: accuracy}}`` (else empty).
        at_edge: the tuned rate is at the edge of the grid.
        val_accuracies: the tuned protocol's per-task meta-val accuracies at its choice,
            shape (val_tasks,) (else empty).
    """

    protocol: str
    result: EvalResult
    lr: float | None
    head: str
    val: dict[str, dict[str, float]]
    at_edge: bool = False
    val_accuracies: npt.NDArray[np.float64] = field(
        default_factory=lambda: np.empty(0, dtype=np.float64)
    )

    @property
    def accuracies(self) -> npt.NDArray[np.float64]:
        """Per-task meta-test accuracies, shape (test_tasks,)."""
        return self.result.accuracies

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the per-task accuracies)."""
        return {
            "protocol": self.protocol,
            **self.result.to_dict(),
            "lr": self.lr,
            "head": self.head,
            "val": self.val,
            "at_edge": self.at_edge,
        }


def published_head(model: Classifier, n_way: int) -> HeadInit:
    """The published protocol's head: the learned one if it fits, else ProtoMAML's."""
    return "learned" if model.num_classes == n_way else "proto"


def meta_test(
    model: Classifier,
    val: ClassImages,
    test: ClassImages,
    setting: TaskSetting,
    settings: ProtocolSettings,
    *,
    device: torch.device | str | None = None,
) -> dict[str, ProtocolResult]:
    """Meta-test ``model`` under every protocol of ``settings`` on one task setting.

    Args:
        model: the initialisation under test (never modified).
        val: the meta-val split (the tuned protocol's choice; never meta-test).
        test: the meta-test split.
        setting: ways, shots and queries.
        settings: task counts, seeds, the tuned grid and the protocols to run.
        device: where to run (default: CUDA when present).

    Returns:
        Protocol name -> :class:`ProtocolResult`, in :data:`PROTOCOLS` order.
    """

    def on_test(mode: str, head: HeadInit = "learned", lr: float = PUBLISHED_LR) -> EvalResult:
        return evaluate(
            model,
            test,
            n_way=setting.n_way,
            k_shot=setting.k_shot,
            q_query=setting.q_query,
            n_tasks=settings.test_tasks,
            mode="proto" if mode == "proto" else "finetune",
            head=head,
            steps=settings.steps,
            lr=lr,
            seed=settings.test_seed,
            device=device,
            by_domain=settings.by_domain,
        )

    out: dict[str, ProtocolResult] = {}
    head = published_head(model, setting.n_way)
    published: ProtocolResult | None = None
    if "published" in settings.protocols:
        published = ProtocolResult("published", on_test("finetune", head), PUBLISHED_LR, head, {})
    if "tuned" in settings.protocols:
        heads = tuple(
            h for h in settings.heads if h != "learned" or model.num_classes == setting.n_way
        )
        choice = select_finetune(
            model,
            val,
            k_shot=setting.k_shot,
            lrs=settings.lrs,
            heads=heads,
            n_tasks=settings.val_tasks,
            seed=settings.val_seed,
            n_way=setting.n_way,
            q_query=setting.q_query,
            steps=settings.steps,
            device=device,
            by_domain=settings.by_domain,
        )
        chosen = cast(HeadInit, choice.head)
        if published is not None and (chosen, choice.lr) == (published.head, published.lr):
            result = published.result  # the published run already measured this choice
        else:
            result = on_test("finetune", chosen, choice.lr)
        out["tuned"] = ProtocolResult(
            "tuned",
            result,
            choice.lr,
            chosen,
            choice.val_table(),
            choice.at_edge,
            choice.chosen_accuracies,
        )
    if published is not None:
        out["published"] = published
    if "proto" in settings.protocols:
        out["proto"] = ProtocolResult("proto", on_test("proto"), None, "none", {})
    return out
