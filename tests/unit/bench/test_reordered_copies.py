"""The reordered-copy study (``scripts.studies.reordered_copies``) on tiny owners."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from free_common.config import ScreeningConfig
from scripts.bench.main_job_owners import Owner
from scripts.studies import reordered_copies as study
from tests.unit.free.synthetic import random_teacher, tiny_spec


def _owners(seed: int, *, dataset: str) -> list[Owner]:
    spec = tiny_spec(5, width=4, size=32, channels=3 if dataset == "icons" else 1)
    states = [random_teacher("t", spec, i).model.state_dict() for i in range(3)]
    return [
        Owner(f"owner-{i:03d}", seed, spec, ("a",) * 5, state, 1.0, 0.0)
        for i, state in enumerate(states)
    ]


def test_the_study_measures_pairs_and_copies_and_writes_its_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(study, "main_job_owners", _owners)
    monkeypatch.setattr(study, "ScreeningConfig", lambda: ScreeningConfig(probe_images=16))
    report = study.run([0], tmp_path)
    rows = report["rows"]["icons"]["0"]
    assert len(rows["honest"]) == 3 and len(rows["copies"]) == 3 * len(study.NOISE)
    low_noise = [r for r in rows["copies"] if r["noise"] == study.NOISE[0]]
    assert all(r["units"] > 0.9 and r["weights"] > 0.9 for r in low_noise)
    summary = report["summary"]["conv4"]
    assert summary["honest_pairs"] == 6  # 3 pairs per dataset
    assert summary[f"noise_{study.NOISE[0]:g}"]["copies"] == 6
    saved = json.loads((tmp_path / "reordered_copies.json").read_text())
    assert saved["summary"] == json.loads(json.dumps(report["summary"]))
    table = (tmp_path / "reordered_copies.md").read_text()
    assert "| conv4 | 6 |" in table
