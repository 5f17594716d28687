from pathlib import Path

import numpy as np

from server.report import AccuracyRow, ReportData, format_table, meta_val_curve, write_report


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
