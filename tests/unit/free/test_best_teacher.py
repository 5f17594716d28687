"""The nearest-centroid ranking shared by the Best-owner baseline and FREE's best-teacher start."""

import dataclasses

import numpy as np
import pytest
import torch

from free_common.data.base import ClassImages
from free_common.free.best_teacher import (
    Ranking,
    at_input,
    rank_by_nearest_centroid,
    rank_per_domain,
    take_in_turns,
)
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


def _ranking(scores: dict[str, float]) -> Ranking:
    return Ranking(scores=dict(scores))


def test_domains_take_turns_and_a_teacher_is_taken_once() -> None:
    rankings = {
        "glyphs": _ranking({"x": 0.9, "y": 0.8, "z": 0.1}),
        "icons": _ranking({"x": 0.95, "w": 0.7, "y": 0.6}),
    }
    # icons' best (x) is already taken by glyphs: icons takes its next, w
    assert take_in_turns(rankings, 3) == [
        ("x", "glyphs", 0.9),
        ("w", "icons", 0.7),
        ("y", "glyphs", 0.8),
    ]
    assert [t for t, _, _ in take_in_turns(rankings, 10)] == ["x", "w", "y", "z"]
    assert take_in_turns({"": _ranking({"a": 0.1, "b": 0.5})}, 1) == [("b", "", 0.5)]
    assert take_in_turns({"": Ranking()}, 2) == []
    with pytest.raises(ValueError, match="k must be"):
        take_in_turns(rankings, 0)


def test_at_input_converts_channels_and_size_and_keeps_a_matching_split() -> None:
    grey = blob_split(num_classes=2, per_class=3)  # (6, 1, 16, 16)
    assert at_input(grey, 1, 16) is grey
    rgb = at_input(grey, 3, 8)
    assert rgb.images.shape == (6, 3, 8, 8) and rgb.images.dtype == np.uint8
    assert np.array_equal(rgb.images[:, 0], rgb.images[:, 2])  # grey repeated
    back = at_input(at_input(grey, 3, 16), 1, 16)
    assert np.abs(back.images.astype(int) - grey.images.astype(int)).max() <= 1
    assert (rgb.labels is grey.labels) and rgb.class_names == grey.class_names


def _two_domains() -> ClassImages:
    """Classes 0-3 are 'glyphs', 4-7 'icons' (blobs on other noise), grey 16x16."""
    a, b = blob_split(num_classes=4, per_class=6, seed=0), blob_split(4, 6, seed=5)
    return ClassImages(
        "both/val",
        np.concatenate([a.images, b.images]),
        np.concatenate([a.labels, b.labels + 4]),
        tuple(f"c{i}" for i in range(8)),
        domains=("glyphs",) * 4 + ("icons",) * 4,
    )


def test_every_candidate_is_ranked_on_each_domain_whatever_its_input() -> None:
    data = _two_domains()
    grey, rgb = (
        random_teacher("grey", tiny_spec(4), seed=2),
        random_teacher("rgb", tiny_spec(4, channels=3, size=32), seed=2),
    )
    rankings = rank_per_domain([_dead("dead"), grey, rgb], data, **KWARGS)  # type: ignore[arg-type]
    assert list(rankings) == ["glyphs", "icons"]
    for domain, part in data.by_domain().items():
        ranking = rankings[domain]
        assert list(ranking.scores) == ["dead", "grey", "rgb"]
        assert ranking.scores["grey"] > ranking.scores["dead"]
        alone = rank_by_nearest_centroid([grey], part, **KWARGS)  # type: ignore[arg-type]
        assert ranking.scores["grey"] == alone.scores["grey"]  # the same tasks as one ranking
        assert ranking.best is not None and ranking.best.teacher_id != "dead"
    one = rank_per_domain([grey], dataclasses.replace(data, domains=()), **KWARGS)  # type: ignore[arg-type]
    assert list(one) == [""]
