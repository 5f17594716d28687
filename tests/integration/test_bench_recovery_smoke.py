"""The recovery-speed benchmark end to end on its ``smoke`` preset (synthetic data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.bench import recovery as bench_recovery

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_recovery_smoke_writes_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    code = bench_recovery.main(
        ["--preset", "smoke", "--out", str(out), "--cache-dir", str(tmp_path / "pools")]
    )
    assert code == 0
    report = json.loads((out / "recovery_speed.json").read_text())
    for key in ("speedup", "free_quality", "scratch_quality", "per_teacher", "meta_training"):
        assert key in report
    rows = report["per_teacher"]
    mean = lambda key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    assert report["speedup"] == pytest.approx(mean("scratch_seconds") / mean("free_seconds"))
    assert all(
        r["scratch_quality"] >= r["free_quality"] - 1e-6 for r in rows if r["scratch_reached"]
    )
    assert {r["held_out"] for r in report["per_teacher"]} == {False, True}
    assert all(r["free_steps"] == report["inversion"]["inner_steps"] for r in report["per_teacher"])
    for key in ("free_fidelity", "scratch_fidelity", "budget_fidelity", "real_fidelity"):
        assert all(0.0 <= r[key] <= 1.0 for r in rows)
    fidelity = report["fidelity"]
    assert fidelity["matched"]["k"] == report["inversion"]["inner_steps"]
    curves = report["curves"]
    assert all(len(c["fidelity"]) == len(c["steps"]) for c in curves.values())
    assert "Fidelity" in (out / "recovery_speed.md").read_text()
    assert "matched fidelity" in (out / "recovery_headline.md").read_text()
    for name in (
        "recovery_speed.md",
        "recovery_quality_vs_steps.png",
        "recovery_fidelity_vs_time.png",
        "recovery_images.png",
    ):
        assert (out / name).stat().st_size > 0
    assert "recovery speed-up" in capsys.readouterr().out
