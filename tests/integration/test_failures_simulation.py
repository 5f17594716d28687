"""Failing owners in simulation: one raises, one times out; the round goes on with the rest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .federation_support import FAST, processes_mentioning, run_main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_round_continues_without_failed_owners(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # Partition 2 sleeps past the round timeout; the healthy owners' 8 local epochs are a few
    # Adam steps, so 25 s covers their replies with room and the round idles little. The
    # export plays no part in failure handling.
    config = FAST + (
        ' fault.partitions="1=raise,2=sleep:60" fed.round-timeout-s=25 fed.min-replies=2'
        " export.enabled=false"
    )
    result = run_main(run_dir, owners=4, run_config=config, timeout=560)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    summary = json.loads((run_dir / "out" / "summary.json").read_text())
    (round1,) = summary["rounds"]
    assert len(round1["accepted"]) == 2
    assert list(round1["failed"].values()) == ["client-raised"]
    assert len(round1["missing"]) == 1  # the sleeper: timed out, not failed
    assert set(round1["accepted"]).isdisjoint({*round1["failed"], *map(str, round1["missing"])})
    report = Path(summary["report"]["markdown"]).read_text()
    assert "client-raised" in report and "timeout" in report
    assert not processes_mentioning(str(run_dir / "flwr-home"))


def test_too_few_replies_stop_with_a_clear_message(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = FAST + ' fault.partitions="0=raise,1=raise" fed.min-replies=2'
    result = run_main(run_dir, owners=3, run_config=config, timeout=400)
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert "need at least 2 accepted models (fed.min-replies)" in log
    assert not (run_dir / "out" / "RESULT.txt").exists()
    assert not processes_mentioning(str(run_dir / "flwr-home"))
