"""The nearest-centroid ranking shared by the Best-owner baseline and FREE's best-teacher start."""

import torch

from free_common.free.best_teacher import rank_by_nearest_centroid
from free_common.free.teachers import Teacher
from tests.unit.core.test_evaluation import blob_split
from tests.unit.free.synthetic import random_teacher, tiny_spec

KWARGS = {"n_way": 4, "k_shot": 1, "q_query": 2, "n_tasks": 4, "seed": 0}


def _dead(teacher_id: str) -> Teacher:
    """Constant features: chance accuracy."""
    teacher = random_teacher(teacher_id, tiny_spec(4), seed=1)
    with torch.no_grad():
        for p in teacher.model.parameters():
            p.zero_()
    return teacher


def test_the_best_score_wins_and_every_candidate_is_scored_on_the_same_tasks() -> None:
    data = blob_split(num_classes=4, per_class=6)
    alive = random_teacher("alive", tiny_spec(4), seed=2)
    ranking = rank_by_nearest_centroid([_dead("dead"), alive], data, **KWARGS)  # type: ignore[arg-type]
    assert ranking.best is alive
    assert list(ranking.scores) == ["dead", "alive"]
    assert ranking.scores["alive"] > ranking.scores["dead"]
    again = rank_by_nearest_centroid([alive], data, **KWARGS)  # type: ignore[arg-type]
    assert again.scores["alive"] == ranking.scores["alive"]


def test_equal_scores_keep_the_first_and_the_global_rng_is_left_alone() -> None:
    data = blob_split(num_classes=4, per_class=6)
    twins = [random_teacher(name, tiny_spec(4), seed=3) for name in ("first", "second")]
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ranking = rank_by_nearest_centroid(twins, data, **KWARGS)  # type: ignore[arg-type]
    assert torch.equal(torch.rand(3), expected)
    assert ranking.best is twins[0]


def test_no_candidate_gives_no_winner() -> None:
    ranking = rank_by_nearest_centroid([], blob_split(), **KWARGS)  # type: ignore[arg-type]
    assert ranking.best is None and ranking.scores == {}
