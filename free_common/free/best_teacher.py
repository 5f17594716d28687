"""The pooled model whose features classify meta-val tasks best (nearest class centroid).

One ranking serves two callers: the "Best owner" baseline of the final comparison
(``server.comparison.best_owner_candidate``) and FREE's optional start from the best
owner's backbone (``meta_learner.init = "best_teacher"``). Both score every candidate on
the same meta-val tasks, so the same pool gives the same choice.

:func:`rank_per_domain` and :func:`take_in_turns` serve the pool distillation stage of a
multi-domain pool: every candidate, whatever its input, is scored on each domain's
meta-val classes (images converted to its input), and the stage's teachers are taken in
turns from the domains' rankings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch

from free_common.data.base import ClassImages
from free_common.evaluation import evaluate
from free_common.free.augment import to_model_input
from free_common.free.teachers import Teacher
from free_common.models import Classifier

__all__ = ["Ranking", "at_input", "rank_by_nearest_centroid", "rank_per_domain", "take_in_turns"]


@dataclass
class Ranking:
    """The winner of :func:`rank_by_nearest_centroid` and every candidate's score.

    Attributes:
        best: the highest-scoring teacher (the first of equal scores), or None when no
            candidate was a :class:`Classifier`.
        scores: mean meta-val accuracy in [0, 1] by teacher id, in the order scored.
    """

    best: Teacher | None = None
    scores: dict[str, float] = field(default_factory=dict)

    def add(self, teacher: Teacher, score: float) -> None:
        """Record ``teacher``'s score; it becomes :attr:`best` only by beating the best."""
        self.scores[teacher.teacher_id] = score
        if self.best is None or score > self.scores[self.best.teacher_id]:
            self.best = teacher

    def best_first(self) -> list[str]:
        """Teacher ids by decreasing score (equal scores keep the order scored)."""
        return sorted(self.scores, key=lambda i: -self.scores[i])


def rank_by_nearest_centroid(
    teachers: Iterable[Teacher],
    val: ClassImages,
    *,
    n_way: int,
    k_shot: int,
    q_query: int,
    n_tasks: int,
    seed: int,
    device: torch.device | str | None = None,
) -> Ranking:
    """Score each teacher's features by nearest-centroid accuracy on the same meta-val tasks.

    Args:
        teachers: the candidates, already filtered to those that take ``val``'s images
            (``(C, S, S)`` equal to the model's input); read once, one at a time, so a
            lazy iterable keeps one model in memory besides the best.
        val: meta-val images.
        n_way: classes per task.
        k_shot: support images per class.
        q_query: query images per class.
        n_tasks: tasks per candidate.
        seed: task-sampling seed (the same tasks for every candidate).
        device: where to evaluate.

    Returns:
        The best teacher and every score. The global RNG state is left as it was.
    """
    tasks = _Tasks(n_way, k_shot, q_query, n_tasks, seed)
    ranking = Ranking()
    for teacher in teachers:
        if isinstance(teacher.model, Classifier):
            ranking.add(teacher, _score(teacher.model, val, tasks, device))
    return ranking


class _Tasks(NamedTuple):
    """The meta-val tasks every candidate of a ranking is scored on."""

    n_way: int
    k_shot: int
    q_query: int
    n_tasks: int
    seed: int


def _score(
    model: Classifier, val: ClassImages, tasks: _Tasks, device: torch.device | str | None
) -> float:
    """Mean nearest-centroid accuracy of ``model``'s features on ``val``'s ``tasks``.

    The global RNG state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        return evaluate(
            model,
            val,
            n_way=tasks.n_way,
            k_shot=tasks.k_shot,
            q_query=tasks.q_query,
            n_tasks=tasks.n_tasks,
            mode="proto",
            seed=tasks.seed,
            device=device,
        ).mean


def at_input(data: ClassImages, channels: int, size: int) -> ClassImages:
    """``data``'s images converted to (channels, size, size) as a teacher's input is.

    Bilinear resize and channel conversion (:func:`free_common.free.augment.to_model_input`),
    back to uint8; ``data`` itself when it already has that shape.
    """
    if data.image_shape == (channels, size, size):
        return data
    pixels = torch.from_numpy(data.images).float() / 255  # (N, C, H, W)
    converted = to_model_input(pixels, size, channels)  # (N, channels, size, size)
    images = (converted * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    return replace(data, images=images)


def rank_per_domain(
    teachers: Iterable[Teacher],
    val: ClassImages,
    *,
    n_way: int,
    k_shot: int,
    q_query: int,
    n_tasks: int,
    seed: int,
    device: torch.device | str | None = None,
) -> dict[str, Ranking]:
    """Every teacher scored on each domain's meta-val classes, whatever its input.

    Args:
        teachers: the candidates, read once, one at a time (a lazy iterable keeps one model
            in memory besides each domain's best); those that are not a
            :class:`Classifier` are skipped.
        val: meta-val images; a split joining several domains is ranked per domain
            (:meth:`ClassImages.by_domain`), one domain under the key ``""``.
        n_way: classes per task.
        k_shot: support images per class.
        q_query: query images per class.
        n_tasks: tasks per candidate and domain.
        seed: task-sampling seed (the same tasks for every candidate).
        device: where to evaluate.

    Returns:
        One :class:`Ranking` per domain, in the order of the domains.
    """
    tasks = _Tasks(n_way, k_shot, q_query, n_tasks, seed)
    parts = val.by_domain() or {"": val}
    rankings = {domain: Ranking() for domain in parts}
    converted: dict[tuple[str, int, int], ClassImages] = {}
    for teacher in teachers:
        if not isinstance(teacher.model, Classifier):
            continue
        spec = teacher.spec
        for domain, part in parts.items():
            key = (domain, spec.in_channels, spec.image_size)
            if key not in converted:
                converted[key] = at_input(part, spec.in_channels, spec.image_size)
            score = _score(teacher.model, converted[key], tasks, device)
            rankings[domain].add(teacher, score)
    return rankings


def take_in_turns(rankings: dict[str, Ranking], k: int) -> list[tuple[str, str, float]]:
    """Up to ``k`` distinct teachers taken in turns from each domain's ranking.

    Round r takes each domain's r-th best (domains in the order given) unless an earlier
    turn already took it, in which case that domain takes its next best.

    Returns:
        ``(teacher id, domain that chose it, its score there)`` in the order taken.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    queues = {d: r.best_first() for d, r in rankings.items()}
    taken: list[tuple[str, str, float]] = []
    chosen: set[str] = set()
    while len(taken) < k and any(queues.values()):
        for domain, queue in queues.items():
            while queue and queue[0] in chosen:
                queue.pop(0)
            if queue and len(taken) < k:
                teacher_id = queue.pop(0)
                chosen.add(teacher_id)
                taken.append((teacher_id, domain, rankings[domain].scores[teacher_id]))
    return taken
