"""The accuracy-against-time study end to end on its ``smoke`` preset (synthetic data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.studies import accuracy_vs_time as study

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_every_arm_records_points_and_a_finished_arm_is_not_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ["--preset", "smoke", "--out", str(out), "--cache-dir", str(cache), "--threads", "1"]
    assert study.main([*args, "--arms", "scratch-3,free"]) == 0
    report = json.loads((out / "accuracy_vs_time_smoke.json").read_text())
    assert [u["arm"] for u in report["units"]] == ["free", "scratch-3"]
    for unit in report["units"]:
        points = unit["points"]
        assert unit["finished"] and points[0]["iteration"] == 0 and points[0]["seconds"] == 0
        assert all(b["seconds"] > a["seconds"] for a, b in zip(points, points[1:], strict=False))
        assert all(0 <= p["accuracy"] <= 100 and 0 <= p["current"] <= 100 for p in points)
        assert points[0]["current"] == points[0]["accuracy"]
    free = report["units"][0]
    config = study.arm_config(study.PRESETS["smoke"], "free")
    # the iterations, then the pool distillation stage in parts, a point after each
    where = [(p["iteration"], p["pool_kd_step"]) for p in free["points"]]
    assert where[-1] == (config.iterations, config.pool_kd.steps)
    assert (config.iterations, study.PRESETS["smoke"].pool_kd_chunk) in where
    assert set(report["baselines"]["methods"]) == {"Random", "Average", "Best owner"}
    # both arms start from the same untrained learner
    assert report["units"][1]["points"][0]["accuracy"] == free["points"][0]["accuracy"]
    assert (out / "accuracy_vs_time_smoke.png").stat().st_size > 0
    assert "FREE (meta-generator)" in (out / "accuracy_vs_time_smoke.md").read_text()
    line = (out / "accuracy_vs_time_smoke_headline.md").read_text()
    assert line.startswith("seconds per iteration: free ") and "untrained start" in line
    assert "seconds to reach the best free model" in line

    def no_training(*_: object, **__: object) -> None:
        raise AssertionError("a finished arm must not train again")

    monkeypatch.setattr(study, "_trainer", no_training)
    assert study.main([*args, "--arms", "free,scratch-3"]) == 0
