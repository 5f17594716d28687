"""The main job's path end to end: scripts/run_main.sh -> flwr run (simulation) -> report."""

from __future__ import annotations

import json
import shlex
import sqlite3
from pathlib import Path

import pytest
import torch

from .federation_support import FAST, processes_mentioning, run_main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_run_main_small_federation(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # two rounds: the second adds new models and FREE continues from its checkpoint
    result = run_main(run_dir, owners=4, run_config=FAST + " fed.num-rounds=2", timeout=560)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    assert "FREE-Fed results (meta-test)" in log
    assert "| FREE |" in log and "| Random (" in log and "| Average (" in log
    out = run_dir / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pool"]["models"] == 8
    assert [len(r["accepted"]) for r in summary["rounds"]] == [4, 4]
    assert "resumed from" in log
    assert [r["method"] for r in summary["rows"]] == ["FREE", "Random", "Average"]
    for key in ("markdown", "json", "accuracy_plot"):
        assert Path(summary["report"][key]).stat().st_size > 0
    for head in ("proto", "protomaml"):  # signed ONNX bundles for the edge
        bundle = Path(summary["export"][head])
        assert {"model.onnx", "manifest.binpb", "manifest.sig"} <= {
            p.name for p in bundle.iterdir()
        }
    with sqlite3.connect(out / "pool" / "pool.db") as db:
        owners = {r[0] for r in db.execute("SELECT owner_id FROM models")}
        signed = {r[0] for r in db.execute("SELECT signed_by FROM models")}
    assert owners == {f"owner-{i:03d}" for i in range(4)}  # each owner twice, new weights
    assert "" not in signed  # every model was signature-checked (demo keys)
    assert "stopping the local SuperLink" in log
    assert not processes_mentioning(str(run_dir / "flwr-home"))


def test_same_seed_gives_the_same_meta_learner(tmp_path: Path) -> None:
    """Replies arrive in any order; the pool and FREE do not depend on it."""
    learners = []
    for run in ("a", "b"):
        run_dir = tmp_path / run
        result = run_main(run_dir, owners=3, run_config=FAST, timeout=400)
        assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
        timing = json.loads((run_dir / "out" / "timing.json").read_text())
        assert timing["exit_code"] == 0 and timing["owners"] == 3
        # the recorded command pastes back into a shell as the same arguments
        assert shlex.split(timing["extra_args"]) == ["--run-config", FAST]
        checkpoint = torch.load(
            run_dir / "out" / "free" / "checkpoints" / "latest.pt", weights_only=True
        )
        learners.append(checkpoint["learner"])
        with sqlite3.connect(run_dir / "out" / "pool" / "pool.db") as db:
            order = [r[0] for r in db.execute("SELECT owner_id FROM models ORDER BY seq")]
        assert order == sorted(order)
    assert learners[0].keys() == learners[1].keys()
    for name, tensor in learners[0].items():
        assert torch.equal(tensor, learners[1][name]), name
