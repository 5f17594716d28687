import json
from pathlib import Path

import numpy as np

from server.report import (
    AccuracyRow,
    ReportData,
    format_table,
    meta_val_curve,
    owner_story,
    pool_kd_curve,
    write_report,
)


def test_report_files(tmp_path: Path) -> None:
    rows = [
        AccuracyRow("FREE", {1: (0.5, 0.01), 5: (0.7, 0.01)}),
        AccuracyRow("Random", {1: (0.3, 0.01), 5: (0.4, 0.02)}),
        AccuracyRow("Average", {}, "no such owner"),
    ]
    history = [
        {"kind": "iteration", "iteration": 1, "loss": 1.0},
        {"kind": "val", "iteration": 2, "val_accuracy": 0.4},
        {"kind": "val", "iteration": 4, "val_accuracy": 0.45},
    ]
    curve = meta_val_curve(history)
    assert curve == [(2, 0.4), (4, 0.45)]
    data = ReportData(
        "t",
        rows,
        n_way=5,
        n_tasks=10,
        curve=curve,
        failures=[{"round": 1, "node_id": 3, "kind": "timeout", "detail": "late"}],
        recovered=np.random.default_rng(0).random((10, 1, 8, 8)),
    )
    paths = write_report(data, tmp_path)
    assert {"markdown", "json", "accuracy_plot", "meta_val_plot", "recovered_plot"} <= set(paths)
    assert all(p.stat().st_size > 0 for p in paths.values())
    text = paths["markdown"].read_text()
    assert "| FREE | 50.00 ± 1.00 | 70.00 ± 1.00 |" in text
    assert "n/a" in format_table(rows, 5)


def test_owner_story_tells_status_reason_and_draws(tmp_path: Path) -> None:
    models = [
        {"teacher_id": t, "owner_id": o, "arch": a, "round": 1}
        for t, o, a in [("t1", "alice", "conv4"), ("t2", "bob", "resnet18"), ("t3", "eve", "conv4")]
    ]
    copy = "near-duplicate of t1: matched output correlation 0.991 on 256 probe images"
    doubt = "outputs disagree with peers on shared class names: mean margin -0.300"
    verdicts = {
        "t1": {"accepted": True, "suspected": False, "reason": "", "findings": []},
        "t2": {
            "accepted": True,
            "suspected": True,
            "reason": "",
            "findings": [{"check": "label_agreement", "exclude": False, "reason": doubt}],
        },
        "t3": {"accepted": False, "suspected": False, "reason": copy, "findings": []},
    }
    history = [
        {"kind": "iteration", "teachers": ["t1", "t2", "t1"]},
        {"kind": "val", "iteration": 1, "val_accuracy": 0.5},
        {"kind": "iteration", "teachers": ["t1"]},
    ]
    rows = owner_story(models, verdicts, history)
    assert [(r["owner"], r["status"], r["sampled"]) for r in rows] == [
        ("alice", "accepted", 3),
        ("bob", "suspected", 1),
        ("eve", "screened out", 0),
    ]
    assert rows[1]["why"] == doubt and rows[2]["why"] == copy
    data = ReportData("t", [AccuracyRow("FREE", {1: (0.5, 0.01)})], 5, 10, owners=rows)
    text = write_report(data, tmp_path)["markdown"].read_text()
    assert "3 pooled models: 1 accepted, 1 screened out, 1 suspected; FREE drew teachers 4" in text
    assert f"| eve | t3 | conv4 | screened out | {copy} | 0 |" in text
    assert owner_story(models[:1], {}, [])[0]["status"] == "not screened"


def test_a_multi_domain_report_has_a_table_per_domain(tmp_path: Path) -> None:
    rows = [AccuracyRow("FREE", {1: (0.5, 0.01)}, protocol="tuned")]
    domains = {
        "glyphs": [AccuracyRow("FREE", {1: (0.61, 0.02)}, protocol="tuned")],
        "icons": [AccuracyRow("FREE", {1: (0.42, 0.03)}, protocol="proto")],
    }
    paths = write_report(
        ReportData("t", rows, 5, 10, domain_rows=domains, domain_tasks=7), tmp_path
    )
    text = paths["markdown"].read_text()
    section = text.split("## Meta-test by domain", 1)[1]
    assert "share of the meta-test tasks (7 each" in section
    assert section.index("**glyphs**") < section.index("**icons**")
    assert "| tuned | FREE | 61.00 ± 2.00 |" in section
    assert "| prototypes (device) | FREE | 42.00 ± 3.00 |" in section
    record = json.loads(paths["json"].read_text())
    assert record["domain_rows"]["icons"][0]["shots"] == {"1": [0.42, 0.03]}
    single = write_report(ReportData("t", rows, 5, 10), tmp_path / "one")["markdown"]
    assert "by domain" not in single.read_text()


def test_pool_distillation_has_its_own_curve_and_section(tmp_path: Path) -> None:
    history = [
        {"kind": "val", "iteration": 20, "pool_kd_step": 0, "val_accuracy": 0.66},
        {"kind": "pool_kd", "step": 200, "loss": 0.13},
        {"kind": "val", "iteration": 20, "pool_kd_step": 200, "val_accuracy": 0.78},
        {"kind": "val", "iteration": 20, "pool_kd_step": 400, "val_accuracy": 0.80},
    ]
    assert meta_val_curve(history) == [(20, 0.66)]
    assert pool_kd_curve(history) == [(200, 0.78), (400, 0.80)]
    stage = {
        "teachers": ["ta", "tb"],
        "scores": {"ta": 0.71, "tb": 0.69},
        "candidates": 20,
        "start": {"iteration": 20, "val": 0.66},
        "steps_done": 400,
        "seconds": 70.0,
    }
    rows = [AccuracyRow("FREE", {1: (0.5, 0.01)})]
    data = ReportData(
        "t", rows, n_way=5, n_tasks=10, pool_kd=stage, pool_kd_curve=pool_kd_curve(history)
    )
    text = write_report(data, tmp_path)["markdown"].read_text()
    assert "## Pool distillation" in text
    assert "400 steps in 70 s from the iteration-20 model (meta-val 66.00%)" in text
    assert "`ta` (71.00%), `tb` (69.00%)" in text and "| 400 | 80.00 |" in text
    assert "pool models best on meta-val" in text
    per_domain = stage | {"domains": {"ta": "glyphs", "tb": "icons"}}
    data = ReportData("t", rows, n_way=5, n_tasks=10, pool_kd=per_domain)
    text = write_report(data, tmp_path / "d")["markdown"].read_text()
    assert "taken in turns from each domain's meta-val ranking" in text
    assert "`ta` (glyphs 71.00%), `tb` (icons 69.00%)" in text
    skipped = ReportData("t", rows, n_way=5, n_tasks=10, pool_kd={"skipped": "empty memory bank"})
    text = write_report(skipped, tmp_path / "s")["markdown"].read_text()
    assert "Skipped: empty memory bank." in text
