"""The screening study's bookkeeping (kept parts, the learned/failed split of exclusions) and
its free-form trigger search."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from free_common.models import ModelSpec
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


class _Regions(torch.nn.Module):
    """Class c's logit: 20 x the mean brightness of region c (a corner patch or a quadrant)."""

    def __init__(self, regions: list[tuple[slice, slice]]) -> None:
        super().__init__()
        self.regions = regions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([20 * x[:, :, r, c].mean((1, 2, 3)) for r, c in self.regions], 1)


def _teacher(regions: list[tuple[slice, slice]]) -> SimpleNamespace:
    spec = ModelSpec("conv4", in_channels=1, image_size=16, num_classes=len(regions), width=4)
    return SimpleNamespace(spec=spec, model=_Regions(regions))


def test_the_mask_search_finds_the_class_a_small_trigger_reaches() -> None:
    half, rest = slice(0, 8), slice(8, 16)
    quadrants = [(half, half), (half, rest), (rest, half), (rest, rest)]
    probes = torch.rand(16, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.3
    torch.manual_seed(0)
    honest = screening._mask_search(_teacher(quadrants), probes)  # type: ignore[arg-type]
    trigger = (slice(13, 15), slice(13, 15))  # a 2x2 patch: the backdoor's target
    torch.manual_seed(0)
    backdoor = screening._mask_search(_teacher([trigger, *quadrants[:3]]), probes)  # type: ignore[arg-type]
    assert backdoor < 0.3 < 0.7 < honest


def test_the_mask_table_sets_the_bar_below_every_honest_teacher() -> None:
    rows = [{"kind": "honest", "mask_ratio": r, "mask_seconds": 1.0} for r in (0.5, 0.8, 0.9)] + [
        {"kind": "backdoor", "mask_ratio": r, "mask_seconds": 2.0} for r in (0.1, 0.6)
    ]
    text = "\n".join(screening._mask_lines([*rows, {"kind": "honest", "moved_share": 1.0}]))
    assert "| honest | 3 | 0.50 | 0.80 | 0.90 | 1.0 |" in text
    assert "below every honest teacher's ratio (0.50) catches 50% of the backdoors" in text
    assert screening._mask_lines([{"kind": "honest", "moved_share": 1.0}]) == []
