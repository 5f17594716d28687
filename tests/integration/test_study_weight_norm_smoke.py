"""The weight-norm study end to end on the accuracy bench's ``smoke`` preset (synthetic data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.studies import weight_norm as study_weight_norm

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_weight_norm_smoke_writes_every_model_and_checks_the_bench_unit(tmp_path: Path) -> None:
    from scripts.bench import accuracy as bench_accuracy

    cache, units = tmp_path / "pools", tmp_path / "units"
    common = ["--preset", "smoke", "--cache-dir", str(cache)]
    assert bench_accuracy.main([*common, "--out", str(tmp_path / "a"), "--units", str(units)]) == 0
    out = tmp_path / "study"
    args = [*common, "--out", str(out), "--units", str(units), "--sizes", "3", "2"]
    assert study_weight_norm.main(args) == 0
    report = json.loads((out / "weight_norm.json").read_text())
    assert [s["name"] for s in report["settings"]] == ["single", "multi"]
    for setting in report["settings"]:
        assert set(setting["test"]) == set(study_weight_norm.MODELS)
        norms = setting["norms"]
        assert norms["random_at_average_norms"] == pytest.approx(norms["average"])
        assert norms["average_at_random_norms"] == pytest.approx(norms["random"])
        # same pool, seed and tasks as the bench: its Random and Average come out identical
        assert setting["bench_check"] == {"random": "identical", "average": "identical"}
        sweep = setting["val_sweep"]["random"]["1"]
        assert [float(lr) for lr in sweep] == list(study_weight_norm.SWEEP_LRS)
    text = (out / "weight_norm.md").read_text()
    assert "| Random, kernels at Average's norms |" in text
    assert (out / "weight_norm_lr_sweep.png").stat().st_size > 0


def test_weight_norm_refuses_an_unknown_setting(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        study_weight_norm.main(["--preset", "smoke", "--settings", "nope", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert not (tmp_path / "weight_norm.json").exists()
