"""The screening study's bookkeeping: kept parts, the learned/failed split of exclusions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.studies import screening


def _report(tmp_path: Path, **changes: object) -> Path:
    report = {"config": {"steps": 10}, "seeds": [0, 1], "seconds": 12.5, **changes}
    path = tmp_path / "screening.json"
    path.write_text(json.dumps(report))
    return path


def test_kept_parts_need_an_earlier_report_of_the_same_settings(tmp_path: Path) -> None:
    want = {"config": {"steps": 10}, "seeds": [0, 1]}
    assert screening._earlier(_report(tmp_path), want)["seconds"] == 12.5
    with pytest.raises(ValueError, match="another seeds"):
        screening._earlier(_report(tmp_path, seeds=[0]), want)
    with pytest.raises(ValueError, match="another config"):
        screening._earlier(_report(tmp_path, config={"steps": 5}), want)
    with pytest.raises(ValueError, match="does not exist"):
        screening._earlier(tmp_path / "missing.json", want)
    with pytest.raises(ValueError, match="unknown parts"):
        screening.run([0], tmp_path, ["honest", "everything"])


def test_exclusions_are_told_apart_by_whether_the_teacher_learned_its_classes() -> None:
    rows = [
        {"teacher": "a", "accepted": True, "holdout_accuracy": 0.9},
        {"teacher": "b", "accepted": False, "holdout_accuracy": 0.35},
        {"teacher": "c", "accepted": True, "holdout_accuracy": 0.4},
    ]
    learned = [r for r in rows if r["holdout_accuracy"] >= screening.LEARNED]
    summary = {
        "learned_teachers": len(learned),
        "learned_excluded": sum(not r["accepted"] for r in learned),
        "failed_teachers": 2,
        "honest_excluded_holdout": {"b": 0.35},
    }
    (line, _) = screening._learned_lines(summary)
    assert "Among the 1 honest teachers that learned their classes" in line
    assert "**0 excluded**; 2 local trainings failed" in line and "b 0.35" in line
    assert screening._learned_lines({}) == []  # a report from before the figure existed


def test_a_report_of_parts_measured_in_separate_runs_says_which_run_measured_which() -> None:
    report = {"measured": {"honest": "2026-12-05", "cost": "first run"}}
    (line, _) = screening._remeasured_lines(report)
    assert "`honest` 2026-12-05, `cost` first run" in line
    assert screening._remeasured_lines({"measured": {"honest": "x", "cost": "x"}}) == []
    assert screening._remeasured_lines({}) == []
