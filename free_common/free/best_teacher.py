"""The pooled model whose features classify meta-val tasks best (nearest class centroid).

One ranking serves two callers: the "Best owner" baseline of the final comparison
(``server.comparison.best_owner_candidate``) and FREE's optional start from the best
owner's backbone (``meta_learner.init = "best_teacher"``). Both score every candidate on
the same meta-val tasks, so the same pool gives the same choice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from free_common.data.base import ClassImages
from free_common.evaluation import evaluate
from free_common.free.teachers import Teacher
from free_common.models import Classifier

__all__ = ["Ranking", "rank_by_nearest_centroid"]


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
    ranking = Ranking()
    for teacher in teachers:
        if not isinstance(teacher.model, Classifier):
            continue
        with torch.random.fork_rng(devices=[]):
            score = evaluate(
                teacher.model,
                val,
                n_way=n_way,
                k_shot=k_shot,
                q_query=q_query,
                n_tasks=n_tasks,
                mode="proto",
                seed=seed,
                device=device,
            ).mean
        ranking.scores[teacher.teacher_id] = score
        if ranking.best is None or score > ranking.scores[ranking.best.teacher_id]:
            ranking.best = teacher
    return ranking
