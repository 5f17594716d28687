"""Deployment Engine on loopback with TLS and SuperNode authentication (3 owners + 1 rogue)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from client.partitions import owner_id_for
from free_common.data.sources import ASSETS_DIR
from free_common.tls import make_supernode_keypair
from scripts.deploy.local_deployment import LocalDeployment, owner_keys

from .federation_support import FAST, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_tls_auth_deployment_runs_the_app(tmp_path: Path) -> None:
    dep = LocalDeployment(tmp_path / "deploy")
    material = dep.make_material(3)
    keys, registry = owner_keys(tmp_path / "owner-keys", [owner_id_for(i) for i in range(3)])
    rogue_key = tmp_path / "rogue"
    private, public = make_supernode_keypair()
    rogue_key.write_bytes(private)
    (tmp_path / "rogue.pub").write_bytes(public)
    with dep.running():
        dep.start_superlink()
        for _, pub in material.supernode_keys:
            dep.register(pub)
        for i in range(3):
            dep.start_supernode(
                i, f'partition-id={i} num-partitions=3 signing-key="{keys[owner_id_for(i)]}"'
            )
        rogue = dep.start_supernode(3, "partition-id=0 num-partitions=3", private_key=rogue_key)
        assert wait_until(lambda: rogue.poll() is not None, timeout=120), "rogue node was accepted"
        assert rogue.returncode != 0
        assert "Failed to activate" in dep.log_text("supernode-3") or "412" in dep.log_text(
            "supernode-3"
        )
        out = tmp_path / "out"
        run_config = (
            f'{FAST} data.assets-dir="{ASSETS_DIR}" out.dir="{out}" fed.min-nodes=3 '
            f'fed.min-replies=3 fed.key-registry="{registry}" fed.demo-key-secret=""'
        )
        result = dep.run_app(run_config, timeout=480)
        log = result.stdout + result.stderr
        assert result.returncode == 0, log[-4000:] + dep.log_text("superlink")[-3000:]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["pool"]["models"] == 3
        with sqlite3.connect(out / "pool" / "pool.db") as db:
            signed = [r[0] for r in db.execute("SELECT signed_by FROM models")]
        assert len(signed) == 3 and all(signed)  # verified against the registry file
        procs = list(dep.procs.values())
    assert all(p.poll() is not None for p in procs)
