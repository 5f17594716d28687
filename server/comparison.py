"""FREE beside what the pool gives for free, on the same tasks, and the choice of what ships.

The main job meta-tests four initialisations under the same protocols
(:mod:`free_common.protocols`):

- **FREE**: the meta-learner that FREE selected on meta-val.
- **Random**: the meta-learner's architecture, untrained
  (:func:`server.baselines.random_initialisation`).
- **Average**: the plain mean of the pooled models that share the meta-learner's spec
  (:func:`server.baselines.average_teachers`, FedAvg of one round).
- **Best owner**: the single pooled model with the meta-learner's backbone whose features
  score best on meta-val with the nearest-centroid rule, the baseline a practitioner tries
  first. Only the learner's backbone competes, so whatever ships has the architecture, input
  and on-device cost that the edge budget was measured for.

Before export the server compares them on meta-val (the tuned protocol's best grid point,
averaged over the evaluated shots; never meta-test) and says which is best and by how much
(:func:`verdict`); ``export.ship`` decides whether the export carries FREE anyway or the
best of them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from free_common.data.base import ClassImages
from free_common.evaluation import confidence_interval
from free_common.free.best_teacher import rank_by_nearest_centroid
from free_common.free.teachers import TeacherSource
from free_common.models import Classifier, ModelSpec
from free_common.protocols import (
    ProtocolResult,
    ProtocolSettings,
    TaskSetting,
    meta_test,
)
from free_common.runtime import pick_device
from server.baselines import BaselineError, average_teachers, random_initialisation
from server.workers import auto_workers, run_jobs

__all__ = [
    "SHIP_CHOICES",
    "Candidate",
    "MethodResult",
    "Verdict",
    "average_candidate",
    "best_owner_candidate",
    "by_domain",
    "compare",
    "paired_interval",
    "random_candidate",
    "verdict",
]

logger = logging.getLogger(__name__)

SHIP_CHOICES: tuple[str, ...] = ("best", "free")
"""``export.ship``: the best method on meta-val, or FREE whatever the comparison says."""


@dataclass(frozen=True)
class Candidate:
    """One initialisation under comparison.

    Attributes:
        name: ``"FREE"``, ``"Random"``, ``"Average"`` or ``"Best owner"``.
        model: the classifier (never modified), or None when the pool cannot provide it.
        spec: its model spec (what an export of it declares).
        note: one line on what it is (``"mean of 10 conv4 owners"``) or why it is missing.
    """

    name: str
    model: Classifier | None
    spec: ModelSpec | None
    note: str


@dataclass
class MethodResult:
    """One candidate's meta-test results and meta-val score.

    Attributes:
        name: the candidate's name.
        note: the candidate's note.
        results: ``results[protocol][k_shot]`` on the meta-test tasks.
        val_score: mean over shots of the tuned protocol's best meta-val accuracy (the
            comparison that decides what ships); None without the tuned protocol.
        val_tasks: the per-task meta-val accuracies behind ``val_score``, shots one after
            the other, shape (shots * val_tasks,): every method sees the same tasks in the
            same order, so two methods' scores compare task by task (empty without them).
    """

    name: str
    note: str
    results: dict[str, dict[int, ProtocolResult]] = field(default_factory=dict)
    val_score: float | None = None
    val_tasks: npt.NDArray[np.float64] = field(
        default_factory=lambda: np.empty(0, dtype=np.float64)
    )


@dataclass(frozen=True)
class Verdict:
    """Which candidate is best on meta-val and what ships.

    Attributes:
        best: the best candidate's name on meta-val.
        shipped: the candidate whose model the export carries.
        scores: meta-val score per candidate (fractions).
        free_margin: FREE's score minus the best other candidate's (negative when FREE
            loses); None when FREE was not evaluated.
        line: the one line that the run prints, the report heads and the manifest carries.
        margin_ci95: half-width of the paired 95% interval of ``free_margin`` over the
            meta-val tasks (None without per-task accuracies).
        margin_tasks: the meta-val tasks behind that interval (0 without them).
    """

    best: str
    shipped: str
    scores: dict[str, float]
    free_margin: float | None
    line: str
    margin_ci95: float | None = None
    margin_tasks: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (signed into the export manifest)."""
        return {
            "best": self.best,
            "shipped": self.shipped,
            "meta_val": {k: round(v, 4) for k, v in self.scores.items()},
            "free_margin": None if self.free_margin is None else round(self.free_margin, 4),
            "free_margin_ci95": None if self.margin_ci95 is None else round(self.margin_ci95, 4),
            "margin_tasks": self.margin_tasks,
            "line": self.line,
        }


def average_candidate(teachers: TeacherSource, spec: ModelSpec) -> Candidate:
    """FedAvg of the pooled models with the meta-learner's spec (loaded one at a time)."""
    same = (teachers.load(t) for t in teachers.ids())
    try:
        model, count = average_teachers(same, spec)
    except BaselineError:
        return Candidate("Average", None, None, f"no {spec.arch} owner with the learner's spec")
    return Candidate("Average", model, spec, f"mean of {count} {spec.arch} owners")


def best_owner_candidate(
    teachers: TeacherSource,
    val: ClassImages,
    learner: ModelSpec | None,
    *,
    n_way: int,
    k_shot: int,
    q_query: int,
    n_tasks: int,
    seed: int,
    device: torch.device | str | None = None,
) -> Candidate:
    """The pooled model with ``learner``'s backbone that classifies meta-val tasks best.

    Models are scored by nearest-centroid accuracy on the same ``n_tasks`` meta-val tasks.
    The winner keeps its own head (its spec may differ from ``learner``'s in class count).
    ``learner=None`` lets every architecture that takes ``val``'s input compete (the
    benchmarks' "best single teacher").
    """
    shape = (val.image_shape[0], val.image_shape[1])

    def fits(spec: ModelSpec) -> bool:
        if learner is None:
            return (spec.in_channels, spec.image_size) == shape
        return spec.same_backbone(learner)

    candidates = (teachers.load(i) for i in teachers.ids())
    ranking = rank_by_nearest_centroid(
        (t for t in candidates if fits(t.spec)),
        val,
        n_way=n_way,
        k_shot=k_shot,
        q_query=q_query,
        n_tasks=n_tasks,
        seed=seed,
        device=device,
    )
    best, scores = ranking.best, ranking.scores
    kind = "" if learner is None else f"{learner.arch} "
    if best is None:
        return Candidate("Best owner", None, None, f"no {kind}owner model takes the input")
    assert isinstance(best.model, Classifier)
    arch = f" ({best.spec.arch})" if learner is None else ""
    note = f"{best.teacher_id}{arch}, best of {len(scores)} {kind}owners on meta-val"
    logger.info("best owner: %s (meta-val nearest centroid %.4f)", note, scores[best.teacher_id])
    return Candidate("Best owner", best.model, best.spec, note)


def random_candidate(spec: ModelSpec, seed: int) -> Candidate:
    """The meta-learner's architecture, freshly initialised from ``seed``."""
    return Candidate("Random", random_initialisation(spec, seed), spec, "untrained initialisation")


@dataclass(frozen=True)
class _Splits:
    """What every meta-test job of :func:`compare` shares."""

    val: ClassImages
    test: ClassImages
    settings: ProtocolSettings
    device: torch.device | str | None


@dataclass(frozen=True)
class _Job:
    """One candidate (its place in the list and name) at one task setting."""

    index: int
    name: str
    model: Classifier
    setting: TaskSetting

    def __str__(self) -> str:
        return f"{self.name}, {self.setting.n_way}-way {self.setting.k_shot}-shot"


def _meta_test_job(splits: _Splits, job: _Job) -> dict[str, ProtocolResult]:
    logger.info(
        "meta-test %s (%s), %d tasks",
        job,
        ", ".join(splits.settings.protocols),
        splits.settings.test_tasks,
    )
    return meta_test(
        job.model, splits.val, splits.test, job.setting, splits.settings, device=splits.device
    )


def compare(
    candidates: Sequence[Candidate],
    val: ClassImages,
    test: ClassImages,
    *,
    n_way: int,
    shots: Sequence[int],
    q_query: int,
    settings: ProtocolSettings,
    device: torch.device | str | None = None,
    workers: int = 1,
) -> list[MethodResult]:
    """Meta-test every candidate under ``settings.protocols`` on the same tasks.

    Each (candidate, shot) pair is one job. ``workers`` is the ``compare.workers``
    setting (:func:`server.workers.auto_workers`: 0 = one worker process per usable core,
    1 = every job here); on CUDA the jobs stay here. The larger shots go first. Tasks are
    seeded, so the results are those of running the jobs one after the other (up to the
    float rounding of a different thread count).

    Returns:
        One :class:`MethodResult` per candidate, in order (empty results when its model
        is None).
    """
    jobs = [
        _Job(i, cand.name, cand.model, TaskSetting(n_way, k, q_query))
        for k in sorted(shots, reverse=True)  # the longest jobs first: the workers end together
        for i, cand in enumerate(candidates)
        if cand.model is not None
    ]
    processes = auto_workers(workers, len(jobs), pick_device(device))
    splits = _Splits(val, test, settings, device)
    found = run_jobs(_meta_test_job, jobs, splits, workers=processes)
    by_job = {(job.index, job.setting.k_shot): r for job, r in zip(jobs, found, strict=True)}
    out: list[MethodResult] = []
    for i, cand in enumerate(candidates):
        method = MethodResult(cand.name, cand.note)
        out.append(method)
        if cand.model is None:
            continue
        vals: list[float] = []
        tasks: list[npt.NDArray[np.float64]] = []
        for k in shots:
            results = by_job[(i, k)]
            for protocol, result in results.items():
                method.results.setdefault(protocol, {})[k] = result
            if "tuned" in results:
                vals.append(max(v for row in results["tuned"].val.values() for v in row.values()))
                tasks.append(results["tuned"].val_accuracies)
        method.val_score = float(np.mean(vals)) if vals else None
        if tasks and len({len(t) for t in tasks}) == 1 and len(tasks[0]):
            method.val_tasks = np.concatenate(tasks)  # equal task counts: its mean is the score
    return out


def by_domain(methods: Sequence[MethodResult]) -> dict[str, list[MethodResult]]:
    """Each domain's share of :func:`compare`'s results, one table per domain.

    In a multi-domain run (``data.test = "glyphs+icons"``) the comparison draws every task
    within one domain, the domains in turn (``ProtocolSettings.by_domain``, FREE's
    multi-domain protocol), so its mean is the mean over domains and its tasks split by
    domain with no further evaluation: a method that serves one domain well and the other
    badly shows it. The tuned protocol keeps the rate and head chosen on the meta-val of
    all domains (what the shipped model is used with).

    Args:
        methods: :func:`compare`'s results (the tasks named by domain).

    Returns:
        Domain -> one :class:`MethodResult` per method, in order (``results`` holds every
        protocol and shot, on that domain's tasks; no meta-val score); empty when the tasks
        were not drawn by domain (a single-domain split).
    """
    order: list[str] = []
    for method in methods:
        for by_shot in method.results.values():
            for found in by_shot.values():
                order += [d for d in dict.fromkeys(found.result.domains) if d not in order]
    out: dict[str, list[MethodResult]] = {}
    for domain in order:
        rows = out.setdefault(domain, [])
        for method in methods:
            row = MethodResult(method.name, method.note)
            rows.append(row)
            for protocol, by_shot in method.results.items():
                for k, found in by_shot.items():
                    row.results.setdefault(protocol, {})[k] = replace(
                        found,
                        result=found.result.of_domain(domain),
                        val_accuracies=np.empty(0, dtype=np.float64),
                    )
    return out


def verdict(methods: Sequence[MethodResult], ship: str = "best") -> Verdict | None:
    """Which method is best on meta-val, FREE's margin, and what ``ship`` exports.

    FREE's margin is over the best other method. Where both carry per-task meta-val
    accuracies on the same tasks, the line gives the margin's paired 95% interval and
    says when the margin lies within it: a difference that the meta-val tasks cannot
    tell from noise (``compare.val-tasks`` sets how many there are).

    Returns:
        None when no method has a meta-val score (no tuned protocol, nothing evaluated).

    Raises:
        ValueError: ``ship`` not in :data:`SHIP_CHOICES`.
    """
    if ship not in SHIP_CHOICES:
        raise ValueError(f"export.ship must be one of {', '.join(SHIP_CHOICES)}, got {ship!r}")
    scores = {m.name: m.val_score for m in methods if m.val_score is not None}
    if not scores:
        return None
    best = max(scores, key=lambda k: scores[k])
    others = {k: v for k, v in scores.items() if k != "FREE"}
    margin = scores["FREE"] - max(others.values()) if "FREE" in scores and others else None
    shipped = "FREE" if ship == "free" and "FREE" in scores else best
    ci95, n_tasks, noise = None, 0, ""
    if margin is None:
        line = f"meta-val: {best} is best ({100 * scores[best]:.2f}%); FREE was not evaluated"
    else:
        rival = max(others, key=lambda k: others[k])
        by_name = {m.name: m for m in methods}
        ci95, n_tasks = paired_interval(by_name["FREE"].val_tasks, by_name[rival].val_tasks)
        if ci95 is not None:
            within = abs(margin) <= ci95
            noise = (
                f"; paired 95% CI ±{100 * ci95:.2f} over {n_tasks} tasks"
                f"{', within the noise' if within else ''}"
            )
        if margin > 0:
            line = (
                f"meta-val: FREE is best, {100 * margin:+.2f} points over {rival} "
                f"({100 * scores['FREE']:.2f}% vs {100 * others[rival]:.2f}%{noise})"
            )
        else:
            line = (
                f"WARNING: FREE IS NOT THE BEST MODEL ON META-VAL: {best} "
                f"{100 * scores[best]:.2f}% vs FREE {100 * scores['FREE']:.2f}% "
                f"({100 * margin:+.2f} points{noise})"
            )
    line += f"; the export ships {shipped} (export.ship={ship})"
    return Verdict(
        best, shipped, {k: float(v) for k, v in scores.items()}, margin, line, ci95, n_tasks
    )


def paired_interval(
    a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]
) -> tuple[float | None, int]:
    """Half-width of the 95% interval of ``mean(a - b)`` over paired tasks, and their count.

    Args:
        a: one method's per-task accuracies, shape (n,).
        b: the other method's, on the same tasks in the same order, shape (n,).

    Returns:
        ``(None, 0)`` unless both hold the same number (at least 2) of tasks.
    """
    if len(a) != len(b) or len(a) < 2:
        return None, 0
    return confidence_interval(np.asarray(a) - np.asarray(b))[1], len(a)
