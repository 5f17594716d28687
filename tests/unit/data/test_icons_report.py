from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from scripts.datasets import icons_report


def test_sample_grid_rows_and_labels() -> None:
    mosaic, labels = icons_report.sample_grid(rows_per_split=2, columns=20)
    assert mosaic.shape == (6 * 34, 20 * 34, 3) and mosaic.dtype == np.uint8
    assert [label.split("(")[1].split(",")[0] for label in labels] == [
        "train", "train", "val", "val", "test", "test"
    ]  # fmt: skip
    tiles = mosaic[:, : 10 * 34].reshape(6, 34, 10, 34, 3)[:, 1:33, :, 1:33]
    assert (tiles != 255).any(axis=(1, 3, 4)).all()  # every class fills its first 10 tiles


def test_report_files(tmp_path: Path) -> None:
    assert icons_report.main(["--episodes", "20", "--out-dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "icons_difficulty.json").read_text())
    assert report["dataset"] == "icons-v1" and report["queries_per_class"] == 5
    assert set(report["results"]) == {"5-way 1-shot", "5-way 5-shot"}
    assert all(0.2 < r["mean"] < 0.8 for r in report["results"].values())
    assert "| 5-way 1-shot |" in (tmp_path / "icons_difficulty.md").read_text()
    assert (tmp_path / "icons_samples.png").stat().st_size > 10_000
