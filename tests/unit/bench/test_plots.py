"""The PNG helpers of ``server.plots``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from server.plots import save_bars, save_curve_panels, save_curves, save_image_grid

PNG = b"\x89PNG"


def test_image_grid(tmp_path: Path) -> None:
    rows = [("t0", torch.rand(3, 1, 8, 8)), ("t1", torch.rand(5, 3, 8, 8))]
    path = save_image_grid(rows, tmp_path / "a" / "grid.png", per_row=4, title="x")
    assert path.read_bytes()[:4] == PNG


def test_curves_and_bars(tmp_path: Path) -> None:
    curves = {"a": ([1, 2, 4], [0.1, 0.5, 0.9]), "b": ([1, 10], [0.2, 0.95])}
    path = save_curves(curves, tmp_path / "c.png", xlabel="x", ylabel="y", hline=0.9, logx=True)
    assert path.read_bytes()[:4] == PNG
    bars = save_bars(
        {"a": 0.1, "b": 3.0}, tmp_path / "b.png", ylabel="s", errors={"a": 0.01}, logy=True
    )
    assert bars.read_bytes()[:4] == PNG


def test_curve_panels(tmp_path: Path) -> None:
    panels = {
        "p1": {"a": ([0.01, 0.1], [0.5, 0.7]), "b": ([0.01, 0.1], [0.6, 0.4])},
        "p2": {"a": ([0.01, 0.1], [0.8, 0.9])},
        "p3": {"c": ([1, 2], [0.1, 0.2])},
    }
    path = save_curve_panels(panels, tmp_path / "d" / "p.png", xlabel="lr", ylabel="acc", logx=True)
    assert path.read_bytes()[:4] == PNG


def test_curve_panels_refuse_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one panel"):
        save_curve_panels({}, tmp_path / "p.png", xlabel="x", ylabel="y")
