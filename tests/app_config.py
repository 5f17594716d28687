"""The app's run-config table as Flower reads it from pyproject.toml (helper, not collected)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, object]:
    """TOML dotted keys (``fed.num-rounds``) parse as nested tables; Flower flattens them."""
    flat: dict[str, object] = {}
    for name, value in table.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def pyproject_run_config() -> dict[str, object]:
    """``[tool.flwr.app.config]`` flattened to Flower's ``"fed.num-rounds"`` keys, in file order."""
    table = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    return _flatten(table)
