"""The bring-your-own-data walkthrough end to end (scripts/deploy/byod.py, server/README.md).

Three owners with folders of their own RGB classes (image sizes differing), a TLS +
SuperNode-authenticated deployment on loopback, held-out folders of other classes as the
server's meta-val and meta-test, and the export evaluated on the held-out folder by the edge
CLI. Small: 4 classes per owner, 10 images per class, the ``test`` FREE preset.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.deploy.byod import OWNER_IDS

from .federation_support import REPO, processes_mentioning

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_byod_walkthrough_runs_end_to_end(tmp_path: Path) -> None:
    work = tmp_path / "byod"
    command = [
        sys.executable, "-m", "scripts.deploy.byod", "--work-dir", str(work),
        "--preset", "test", "--classes-per-owner", "4", "--held-out-classes", "4",
        "--images-per-class", "10", "--run-config", "local.epochs=10",
        "--ways", "3", "--shots", "1", "--queries", "2", "--episodes", "20",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=560, cwd=REPO)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    # the edge CLI's result on the held-out test folder is the script's last line
    edge = result.stdout.strip().splitlines()[-1]
    assert re.match(r"folder 3-way 1-shot, 20 episodes: accuracy \d+\.\d\d \+- ", edge), edge
    out = work / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pool"]["models"] == 3
    with sqlite3.connect(out / "pool" / "pool.db") as db:
        rows = db.execute("SELECT owner_id, signed_by, spec_json FROM models ORDER BY owner_id")
        models = [(owner, signed, json.loads(spec)) for owner, signed, spec in rows]
    assert [m[0] for m in models] == list(OWNER_IDS)
    assert all(m[1] for m in models)  # every model checked against the registered owner key
    assert [(m[2]["in_channels"], m[2]["image_size"]) for m in models] == [
        (3, 32),
        (3, 24),
        (3, 40),
    ]
    report = (out / "report" / "report.md").read_text()
    held_out = work / "data" / "held-out"
    assert f"- meta-val: `folder:{held_out / 'val'}`" in report
    assert f"- meta-test: `folder:{held_out / 'test'}`" in report
    assert "- meta-learner input: `3x16x16`" in report  # RGB from the folders, test preset side
    assert "3x40x40 -> 3x16x16" in report  # owners' inputs adapted
    methods = ["FREE", "Random", "Average", "Best owner"]  # the best owner of any architecture
    assert [(r["protocol"], r["method"]) for r in summary["rows"]] == [
        (protocol, method) for protocol in ("tuned", "proto") for method in methods
    ]
    assert not processes_mentioning(str(work / "deploy"))
