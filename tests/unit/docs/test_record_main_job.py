import json
from pathlib import Path

import pytest

from scripts import record_main_job

TABLE = "| protocol | method | 5-way 1-shot |\n|---|---|---|\n| tuned | FREE | 70.00 ± 1.00 |"


def _rows(free: float, random: float, average: float) -> list[dict[str, object]]:
    return [
        {"method": m, "protocol": p, "shots": {"1": [v, 0.01], "5": [v + 0.1, 0.005]}}
        for p in ("tuned", "proto")
        for m, v in (("FREE", free), ("Random", random), ("Average", average))
    ]


def _run(
    tmp_path: Path,
    *,
    seed: int = 0,
    seconds: int = 681,
    exit_code: int = 0,
    rows: list[dict[str, object]] | None = None,
    domain_rows: dict[str, list[dict[str, object]]] | None = None,
    domain_tasks: int | None = None,
) -> Path:
    out = tmp_path / f"main-{seed}" / "out"
    out.mkdir(parents=True)
    summary = {
        "pool": {"models": 3, "by_arch": {"conv4": 2, "resnet10": 1}},
        "settings": {"seed": seed, "preset": "xkd-cpu"},
        "free_config": {"iterations": 60, "eval": {"test_tasks": 600}},
        "best_iteration": 40,
        "verdict": {"line": f"meta-val: FREE is best (seed {seed})"},
        "rows": rows if rows is not None else _rows(0.70, 0.60, 0.65),
        "table": TABLE,
    }
    if domain_rows is not None:
        summary["domain_rows"] = domain_rows
    if domain_tasks is not None:  # each task within one domain: the domain's share
        summary["domain_tasks"] = domain_tasks
    else:  # before 2026-12-07: tasks of each domain's own, beside the union's
        summary["settings"]["compare_domain_tasks"] = 300  # type: ignore[index]
    (out / "summary.json").write_text(json.dumps(summary))
    timing = {"flwr_run_s": seconds, "exit_code": exit_code, "owners": 3, "cpus": 2}
    (out / "timing.json").write_text(json.dumps(timing))
    return out.parent


def test_seeds_are_aggregated_with_spread_worst_seed_and_the_goal_per_seed(tmp_path: Path):
    runs = [
        _run(tmp_path, seed=1, rows=_rows(0.70, 0.60, 0.67)),
        _run(tmp_path, seed=0, rows=_rows(0.72, 0.60, 0.65)),
        _run(tmp_path, seed=2, rows=_rows(0.66, 0.61, 0.655)),
    ]
    results = tmp_path / "results"
    assert record_main_job.main([*map(str, runs), "--out", str(results)]) == 0
    record = json.loads((results / "main_job.json").read_text())
    assert [r["seed"] for r in record["runs"]] == [0, 1, 2]
    free = record["table"]["tuned"]["FREE"]["1"]
    assert free["seeds"] == [72.0, 70.0, 66.0] and free["worst"] == 66.0
    assert free["mean"] == pytest.approx(69.33, abs=0.01)
    assert free["sd"] == pytest.approx(3.06, abs=0.01)
    assert record["margins"]["tuned"]["1"] == [7.0, 3.0, 0.5]  # over the better baseline
    text = (results / "main_job.md").read_text()
    assert "1-shot +7.00, +3.00, +0.50 (goal +1.42 in every seed: NOT met)" in text
    line = (results / "main_job_headline.md").read_text()
    assert line.count("\n") == 1  # one line: it fills the README's headline cell
    assert line.startswith("mean of 3 seed(s) (0, 1, 2), prototypes (device): FREE 69.3 / 79.3")
    assert "tuned: FREE 69.3 / 79.3, Random 60.3 / 70.3" in line
    assert line.rstrip().endswith("the guard shipped FREE in 3 of 3")
    assert "5-shot" in text and "meta-val: FREE is best (seed 2)" in text
    assert "| tuned | FREE | 69.33 ± 3.06 (66.00) [1.00] |" in text
    assert "FREE `xkd-cpu` preset" in text
    assert "| not recorded |" in text  # runs without a report: screening unknown, not zero


def test_screening_is_recorded_per_seed_from_the_runs_report(tmp_path: Path):
    run = _run(tmp_path)
    owners = [
        {"owner": "o1", "arch": "conv4", "status": "accepted", "why": ""},
        {"owner": "o2", "arch": "resnet18", "status": "screened out", "why": "confidence 0.4"},
    ]
    (run / "out" / "report").mkdir()
    (run / "out" / "report" / "report.json").write_text(json.dumps({"owners": owners}))
    results = tmp_path / "results"
    assert record_main_job.main([str(run), "--out", str(results)]) == 0
    record = json.loads((results / "main_job.json").read_text())
    assert record["runs"][0]["screening"]["counts"] == {"accepted": 1, "screened out": 1}
    text = (results / "main_job.md").read_text()
    assert "| 1 accepted, 1 screened out: o2 (resnet18, screened out: confidence 0.4) |" in text


def test_a_run_time_over_budget_is_said(tmp_path: Path):
    results = tmp_path / "results"
    assert record_main_job.main([str(_run(tmp_path, seconds=1200)), "--out", str(results)]) == 0
    assert "1200 s (20.0 min, OVER 15 min)" in (results / "main_job.md").read_text()


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


def test_another_configuration_is_recorded_under_its_own_stem(tmp_path: Path):
    results = tmp_path / "results"
    assert (
        record_main_job.main([str(_run(tmp_path)), "--out", str(results), "--stem", "mixed"]) == 0
    )
    names = {p.name for p in results.iterdir()}
    assert names == {"mixed.json", "mixed.md", "mixed_headline.md", "mixed_table.md"}


def test_a_multi_domain_run_gets_a_table_per_domain(tmp_path: Path):
    domains = [
        {"glyphs": _rows(0.80, 0.70, 0.75), "icons": _rows(0.50 + d, 0.55, 0.52)}
        for d in (0.0, 0.02)
    ]
    runs = [_run(tmp_path, seed=s, domain_rows=domains[s], domain_tasks=300) for s in (0, 1)]
    results = tmp_path / "results"
    assert record_main_job.main([*map(str, runs), "--out", str(results)]) == 0
    record = json.loads((results / "main_job.json").read_text())
    assert list(record["domains"]) == ["glyphs", "icons"]
    icons = record["domains"]["icons"]["table"]["proto"]["FREE"]["1"]
    assert icons["seeds"] == [50.0, 52.0] and icons["worst"] == 50.0
    text = (results / "main_job.md").read_text()
    assert "Meta-test of the icons classes alone, the 300 tasks of that domain among" in text
    assert "(each within one domain, the domains in turn: FREE's multi-domain protocol" in text
    assert "| prototypes (device) | FREE | 51.00 ± 1.41 (50.00) [1.00] |" in text
    # a run recorded before the tasks were drawn by domain says how it was measured
    old = tmp_path / "old"
    runs = [_run(old, seed=s, domain_rows=domains[s]) for s in (0, 1)]
    assert record_main_job.main([*map(str, runs), "--out", str(old / "r")]) == 0
    text = (old / "r" / "main_job.md").read_text()
    assert "Meta-test of the icons classes alone, 300 tasks per method" in text
    assert "multi-domain protocol" not in text
    # a single-domain run has no such table
    single = tmp_path / "single"
    assert record_main_job.main([str(_run(single)), "--out", str(single / "r")]) == 0
    assert "alone" not in (single / "r" / "main_job.md").read_text()


def test_the_pool_distillation_stage_is_named_with_the_shipped_step(tmp_path: Path):
    run = _run(tmp_path)
    summary_path = run / "out" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["free_config"]["pool_kd"] = {"enabled": True, "steps": 1000}
    summary["best_pool_kd_step"] = 800
    summary_path.write_text(json.dumps(summary))
    results = tmp_path / "results"
    assert record_main_job.main([str(run), "--out", str(results)]) == 0
    text = (results / "main_job.md").read_text()
    words = "60 iterations then 1000 pool distillation steps (teachers in float32, learner in"
    assert f"{words} float32)" in text
    assert "| 40, distillation step 800 |" in text
    summary["pool_kd"] = {"teacher_dtype": "bfloat16"}  # runs since the stage records it
    summary_path.write_text(json.dumps(summary))
    assert record_main_job.main([str(run), "--out", str(results)]) == 0
    text = (results / "main_job.md").read_text()
    assert "1000 pool distillation steps (teachers in bfloat16, learner in float32)" in text
    summary["pool_kd"]["learner_dtype"] = "bfloat16"  # and since 2026-12-07 the learner's
    summary_path.write_text(json.dumps(summary))
    assert record_main_job.main([str(run), "--out", str(results)]) == 0
    text = (results / "main_job.md").read_text()
    assert "(teachers in bfloat16, learner in bfloat16)" in text


def test_a_run_without_the_summary_key_takes_the_step_from_its_checkpoint(tmp_path: Path):
    from server.checkpoint import save_checkpoint

    run = _run(tmp_path)
    save_checkpoint(run / "out" / "free" / "checkpoints" / "latest.pt", {"run": {"best_step": 600}})
    assert record_main_job.load_run(run)["best_pool_kd_step"] == 600
    assert record_main_job.load_run(_run(tmp_path, seed=1))["best_pool_kd_step"] == 0


def test_the_table_is_written_alone_and_rebuilt_from_the_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    runs = [_run(tmp_path, seed=s, rows=_rows(0.70 + s / 100, 0.60, 0.65)) for s in (0, 1)]
    results = tmp_path / "results"
    assert record_main_job.main([*map(str, runs), "--out", str(results)]) == 0
    written = {p.name: p.read_text() for p in results.glob("*.md")}
    table = written["main_job_table.md"]
    assert table.startswith("600 meta-test tasks per method, protocol and shot; mean over 2")
    assert "| tuned | FREE | 70.50 ± 0.71 (70.00)" in table
    for path in results.glob("*.md"):
        path.unlink()
    assert record_main_job.main(["--rebuild", "--out", str(results)]) == 0
    assert {p.name: p.read_text() for p in results.glob("*.md")} == written
    # run directories and --rebuild exclude each other; a missing record is said
    with pytest.raises(SystemExit):
        record_main_job.main([str(runs[0]), "--rebuild", "--out", str(results)])
    assert record_main_job.main(["--rebuild", "--stem", "other", "--out", str(results)]) == 2
    assert "other.json" in capsys.readouterr().err


def test_the_header_names_the_settings_the_runs_share_besides_their_seed():
    icons = 'data.train="icons" data.val="icons"'
    runs = [{"extra_args": f"--run-config 'seed={s} {icons}'"} for s in (0, 1)]
    assert record_main_job.command_words(runs) == f"--run-config 'seed=K {icons}'"
    assert record_main_job.command_words([{"extra_args": ""}]) == "--run-config 'seed=K'"
    mixed = [*runs, {"extra_args": "--run-config 'seed=2'"}]
    assert "settings differ between runs" in record_main_job.command_words(mixed)
