"""The accuracy-against-time study's arms and its stopping rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.studies.accuracy_vs_time import PRESETS, _budget, arm_config, scratch_steps

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
