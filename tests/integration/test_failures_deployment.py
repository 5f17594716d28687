"""A SuperNode killed mid-round is reported by node; the round goes on with the others.

The killed node's pending instruction comes back from the SuperLink as "node unavailable"
(Flower's heartbeat), well before the round timeout: the test asserts that attribution and
that the round did not wait the timeout out. The export is off (it plays no part here).
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from free_common.data.sources import ASSETS_DIR
from scripts.deploy.local_deployment import LocalDeployment

from .federation_support import FAST, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ROUND_TIMEOUT_S = 120  # above Flower's 2 x 30 s heartbeat window; never reached when it works


def test_killed_supernode_is_reported(tmp_path: Path) -> None:
    dep = LocalDeployment(tmp_path / "deploy")
    material = dep.make_material(3)
    out = tmp_path / "out"
    with dep.running():
        dep.start_superlink()
        for _, pub in material.supernode_keys:
            dep.register(pub)
        for i in range(3):
            dep.start_supernode(i, f"partition-id={i} num-partitions=3")
        run = dep.start_app(
            f'{FAST} data.assets-dir="{ASSETS_DIR}" out.dir="{out}" fed.min-nodes=3 '
            'fed.min-replies=2 fault.partitions="2=sleep:300" export.enabled=false '
            f"fed.round-timeout-s={ROUND_TIMEOUT_S}"
        )
        # partition 2 is now "training" (sleeping): kill its SuperNode mid-round
        assert wait_until(lambda: "injected sleep" in dep.log_text("supernode-2"), timeout=240), (
            dep.log_text("supernode-2")[-3000:]
        )
        dep.stop("supernode-2")
        assert wait_until(lambda: run.poll() is not None, timeout=300), dep.log_text("flwr-run")[
            -3000:
        ]
        log = dep.log_text("flwr-run")
        assert run.returncode == 0, log[-4000:]
        summary = json.loads((out / "summary.json").read_text())
        (round1,) = summary["rounds"]
        assert len(round1["accepted"]) == 2
        # the killed node is reported as unavailable, not left to time out
        assert round1["missing"] == []
        ((node, kind),) = round1["failed"].items()
        assert kind == "node-unavailable"
        took = re.search(r"round 1: 2/3 accepted, .* in ([\d.]+) s", log)
        assert took is not None, log[-4000:]
        assert float(took.group(1)) < ROUND_TIMEOUT_S
        with sqlite3.connect(out / "pool" / "pool.db") as db:
            failures = db.execute("SELECT node_id, kind FROM failures").fetchall()
            accepted_nodes = {r[0] for r in db.execute("SELECT node_id FROM models")}
        assert [str(node)] == [f[0] for f in failures]  # attributed to the killed node
        assert str(node) not in accepted_nodes
