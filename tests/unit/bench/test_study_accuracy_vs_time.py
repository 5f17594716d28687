"""The accuracy-against-time study's arms and its stopping rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.studies.accuracy_vs_time import (
    PRESETS,
    _budget,
    arm_config,
    best_baseline,
    headline,
    scratch_steps,
    seconds_to_reach,
)

FULL = PRESETS["full"]


def test_arm_names() -> None:
    assert scratch_steps("free") is None and scratch_steps("scratch-20") == 20
    for bad in ("scratch", "scratch-0", "scratch-x", "replay-5", "FREE"):
        with pytest.raises(ValueError, match="unknown arm"):
            scratch_steps(bad)


def test_arms_share_the_meta_learning_and_differ_only_in_inversion_and_chunk() -> None:
    free, fast, slow = (arm_config(FULL, a) for a in ("free", "scratch-20", "scratch-200"))
    assert fast.inversion.scratch_steps == 20 and slow.inversion.scratch_steps == 200
    assert free.meta_learner == fast.meta_learner == slow.meta_learner
    assert free.seed == slow.seed and free.iterations == slow.iterations
    assert free.eval.every == free.checkpoint_every == FULL.chunk
    assert slow.eval.every == slow.checkpoint_every == FULL.scratch_chunk


def test_other_arms_need_the_finished_free_arm_and_stop_past_its_time(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="finished 'free' arm"):
        _budget(tmp_path, "scratch-20", FULL)
    unit = {"finished": True, "points": [{"seconds": 0.0}, {"seconds": 400.0}]}
    (tmp_path / "free.json").write_text(json.dumps(unit))
    assert _budget(tmp_path, "scratch-20", FULL) == pytest.approx(FULL.time_slack * 400.0)
    assert _budget(tmp_path, "free", FULL) == float("inf")


def _unit(arm: str, points: list[tuple[int, int, float, float]]) -> dict[str, object]:
    return {
        "arm": arm,
        "points": [
            {"iteration": i, "pool_kd_step": k, "seconds": t, "accuracy": a, "current": a}
            for i, k, t, a in points
        ],
    }


def test_the_time_to_reach_the_best_free_model_is_the_first_point_at_or_above_it() -> None:
    free = _unit("free", [(0, 0, 0.0, 60.0), (5, 0, 50.0, 59.0), (5, 400, 120.0, 80.0)])
    scratch = _unit("scratch-20", [(0, 0, 0.0, 60.0), (5, 0, 130.0, 58.0), (5, 400, 240.0, 70.0)])
    baselines = {
        "methods": {
            "Random": {"accuracy": 60.0, "ci95": 1.0, "note": ""},
            "Best owner": {"accuracy": 75.0, "ci95": 1.0, "note": ""},
        }
    }
    assert best_baseline(baselines) == ("Best owner", 75.0) and best_baseline({}) is None
    assert seconds_to_reach(free, 75.0) == 120.0 and seconds_to_reach(scratch, 75.0) is None
    assert seconds_to_reach(free, 60.0) == 0.0
    line = headline([free, scratch], baselines)
    # per iteration: the meta-training points only (50 s / 5), not the stage's
    assert line.startswith("seconds per iteration: free 10 s, scratch-20 26 s")
    assert "(Best owner 75.0): FREE 120 s; scratch-20 not within its 240 s (more than 2.0x)" in line
