"""The pool across processes: openers during ingestion and kill -9 during add lose nothing.

Smaller counts than ``python -m scripts.bench.stress_pool`` (100 ingestions, 50 kills), same checks.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.bench.stress_pool import concurrent_open, kill_during_add, synthetic_models

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_openers_during_ingestion_lose_nothing(tmp_path: Path) -> None:
    result = concurrent_open(tmp_path / "pool", synthetic_models(120), openers=2)
    assert result["writer_exit_code"] == 0 and result["accepted"] == 120
    assert result["opens"] >= 50, result
    # only an open that came after the writer had closed may become a writer itself
    assert result["second_writer_opened"] <= 2, result
    assert result["second_writer_errors"] == 0, result
    assert result["reader_loads"] > 0 and result["reader_errors"] == 0, result
    assert result["lost"] == 0 and result["unreachable"] == 0, result
    assert result["leftover_files"] == 0 and result["pool_models"] == 120


def test_kill_during_add_loses_nothing(tmp_path: Path) -> None:
    result = kill_during_add(tmp_path / "pool", 20, models_per_trial=10, seed=1)
    assert result["killed_mid_ingestion"] == 20, result
    assert result["accepted"] > 0 and result["kills_that_left_files"] > 0, result  # recovery ran
    assert result["lost"] == 0 and result["unreachable"] == 0, result
    assert result["leftover_files"] == 0, result
