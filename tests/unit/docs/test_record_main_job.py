import json
from pathlib import Path

import pytest

from scripts import record_main_job

TABLE = "\n".join(
    [
        "| method | 5-way 1-shot | 5-way 5-shot |",
        "|---|---|---|",
        "| FREE | 70.47 ± 0.84 | 87.60 ± 0.53 |",
    ]
)


def _run(tmp_path: Path, *, seconds: int = 681, exit_code: int = 0) -> Path:
    out = tmp_path / "main-x" / "out"
    out.mkdir(parents=True)
    summary = {
        "pool": {"models": 3, "by_arch": {"conv4": 2, "resnet10": 1}},
        "free_config": {"iterations": 60, "eval": {"test_tasks": 600}},
        "best_iteration": 40,
        "rows": [{"method": "FREE", "shots": {"1": [0.7, 0.01]}}],
        "table": TABLE,
    }
    (out / "summary.json").write_text(json.dumps(summary))
    timing = {"flwr_run_s": seconds, "exit_code": exit_code, "owners": 3, "cpus": 2}
    (out / "timing.json").write_text(json.dumps(timing))
    return out.parent


def test_writes_json_and_markdown_from_the_run(tmp_path: Path):
    results = tmp_path / "results"
    assert record_main_job.main([str(_run(tmp_path)), "--out", str(results)]) == 0
    record = json.loads((results / "main_job.json").read_text())
    assert record["flwr_run_s"] == 681
    assert record["within_budget"] is True
    text = (results / "main_job.md").read_text()
    assert TABLE in text
    assert "took 681 s (11.3 min, within the 15-minute budget)" in text
    assert "2 conv4, 1 resnet10" in text


def test_over_budget_is_said(tmp_path: Path):
    results = tmp_path / "results"
    assert record_main_job.main([str(_run(tmp_path, seconds=1200)), "--out", str(results)]) == 0
    assert "OVER the 15-minute budget" in (results / "main_job.md").read_text()


@pytest.mark.parametrize("remove", ["summary.json", "timing.json"])
def test_an_unfinished_run_is_refused_with_what_is_missing(
    tmp_path: Path, remove: str, capsys: pytest.CaptureFixture[str]
):
    run = _run(tmp_path)
    (run / "out" / remove).unlink()
    assert record_main_job.main([str(run), "--out", str(tmp_path / "r")]) == 2
    assert remove in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_failed_run_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert record_main_job.main([str(_run(tmp_path, exit_code=1)), "--out", str(tmp_path)]) == 2
    assert "exited with code 1" in capsys.readouterr().err
