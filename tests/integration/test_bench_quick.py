"""The recovery and accuracy benchmarks on their ``quick`` presets (real glyph data, in CI).

These are the CI-sized runs of the benchmarks (each under 10 minutes on 2 cores): the real
glyph teachers, the real code paths and the real report files, with small pools and few
iterations. They check that each headline figure is computed from the per-teacher and
per-task measurements as the report says, and what must hold at any size (FREE's trained
generator beats an untrained one; every method beats chance), not that the goals are met
(the ``full`` presets measure those).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from scripts.bench import accuracy as bench_accuracy
from scripts.bench import recovery as bench_recovery

pytestmark = [pytest.mark.slow, pytest.mark.integration]

QUICK_BUDGET_S = 600.0


@pytest.fixture
def two_threads() -> None:
    """The quick presets are sized for both cores of the CI machine."""
    torch.set_num_threads(2)


def _run_quick(bench: ModuleType, tmp_path: Path, report_name: str) -> dict[str, Any]:
    """Run ``bench`` on its quick preset into ``tmp_path`` within budget; its JSON report."""
    out = tmp_path / "results"
    started = time.perf_counter()
    code = bench.main(["--preset", "quick", "--out", str(out), "--cache-dir", str(tmp_path / "p")])
    seconds = time.perf_counter() - started
    assert code == 0
    report: dict[str, Any] = json.loads((out / report_name).read_text())
    assert report["preset"] == "quick"
    assert seconds < QUICK_BUDGET_S * 1.5, f"{bench.__name__} quick took {seconds:.0f} s"
    return report


@pytest.mark.usefixtures("two_threads")
@pytest.mark.timeout(900)
def test_recovery_quick_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = _run_quick(bench_recovery, tmp_path, "recovery_speed.json")
    out = tmp_path / "results"
    assert report["dataset"] == "glyphs"
    preset = bench_recovery.PRESETS["quick"]
    assert len(report["per_teacher"]) == preset.eval_in_pool + preset.eval_held_out
    # Meta-training must buy something: k steps from the trained generator beat k steps
    # from an untrained one, on the same teachers.
    summary = report["summary"]["all"]
    assert summary["free_quality"] > summary["untrained_generator_quality"]
    rows = report["per_teacher"]
    # FREE takes exactly k steps per teacher; scratch runs until it matches FREE's quality
    # (or its cap), so wherever it reached the target its quality is at least FREE's.
    k = preset.inversion.inner_steps
    assert all(r["free_steps"] == k for r in rows)
    assert all(
        r["scratch_quality"] >= r["free_quality"] - 1e-6 for r in rows if r["scratch_reached"]
    )
    assert all(
        r["scratch_steps"] <= preset.max_scratch_steps and r["scratch_steps"] >= 1 for r in rows
    )
    # The headline figures are what they say: mean scratch seconds over mean FREE seconds at
    # matched quality, and the published budget's step ratio.
    mean = lambda key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    assert report["speedup"] == pytest.approx(mean("scratch_seconds") / mean("free_seconds"))
    assert report["free_quality"] == pytest.approx(mean("free_quality"))
    assert report["scratch_quality"] == pytest.approx(mean("scratch_quality"))
    assert report["published_budget_steps_ratio"] == preset.inversion.scratch_steps / k
    bar = report["quality_bar"]
    met = report["free_quality"] >= bar and report["scratch_quality"] >= bar
    assert report["meets_quality_bar"] == met
    for name in ("recovery_speed.md", "recovery_quality_vs_steps.png", "recovery_images.png"):
        assert (out / name).stat().st_size > 0
    assert "recovery speed-up (matched quality)" in capsys.readouterr().out


@pytest.mark.usefixtures("two_threads")
@pytest.mark.timeout(1200)
def test_accuracy_quick_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = _run_quick(bench_accuracy, tmp_path, "accuracy.json")
    assert [s["name"] for s in report["settings"]] == ["single", "multi"]
    for setting in report["settings"]:
        for shot in ("1", "5"):
            row = setting["results"][shot]
            for method in bench_accuracy.METHODS:
                # Every method is a real 5-way classifier after adaptation: above chance.
                assert 0.2 < row[method]["mean"] <= 1.0, (setting["name"], shot, method)
                assert row[method]["ci95"] > 0.0
    assert "FREE − best data-free baseline" in capsys.readouterr().out
