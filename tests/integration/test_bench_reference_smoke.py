import json

import pytest

from scripts.bench.reference import main


@pytest.mark.slow
@pytest.mark.integration
def test_smoke_preset_writes_every_report(tmp_path):
    assert main(["--preset", "smoke", "--out", str(tmp_path)]) == 0

    report = json.loads((tmp_path / "reference_baselines.json").read_text())
    methods = {(row["method"], row["k_shot"]) for row in report["results"]}
    assert methods == {(m, k) for m in ("Random init", "MAML (real data)") for k in (1, 5)}
    for row in report["results"]:
        for mode in ("finetune", "proto"):
            assert 0.0 <= row[mode]["mean"] <= 1.0 and row[mode]["n_tasks"] == 4
    assert report["metadata"]["preset"] == "smoke"
    assert "| Random init | 1 |" in (tmp_path / "reference_baselines.md").read_text()
    assert (tmp_path / "reference_baselines_val_curve.png").stat().st_size > 1000
