"""A server killed with SIGKILL during meta-training resumes from its checkpoint, pool intact."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .federation_support import REPO, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

WORKER = textwrap.dedent(
    """
    import json, logging, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    from free_common.data.glyphs import load_glyphs
    from free_common.models import ModelSpec
    from server.federation import (FederationSettings, free_config_from_run_config,
                                   key_registry_for, run_federation)
    from server.round import Reply
    from tests.unit.federation.helpers import SECRET, make_submission

    run_dir = Path(sys.argv[1])
    calls = run_dir.parent / "collect-calls.txt"

    def collect(r):
        with open(calls, "a") as fh:
            fh.write(f"{r}\\n")
        spec = ModelSpec(arch="conv4", width=8, image_size=32)
        subs = [make_submission(f"owner-{i:03d}", seed=i, spec=spec) for i in range(3)]
        return ({f"m{i}": 100 + i for i in range(3)},
                [Reply(f"m{i}", submission=s) for i, s in enumerate(subs)])

    rc = {"preset": "paper-cpu", "free.iterations": 6, "free.checkpoint-every": 1,
          "free.eval.every": 3, "free.eval.val-tasks": 3, "free.eval.test-tasks": 3,
          "free.screening.steps": 2, "free.screening.min-confidence": 0.0,
          "free.screening.min-accuracy": 0.0}
    settings = FederationSettings(demo_key_secret=SECRET, export=False)
    out = run_federation(settings, free_config_from_run_config(rc), collect, run_dir=run_dir,
                         val_data=load_glyphs("val"),
                         keys=key_registry_for(settings), progress=False)
    print("DONE", json.dumps(out["pool"]))
    """
)


def _start(script: Path, run_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, str(script), str(run_dir)], cwd=REPO, env=env, stdout=fh,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _pool(run_dir: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(run_dir / "pool" / "pool.db") as db:
        return db.execute("SELECT teacher_id, digest FROM models ORDER BY seq").fetchall()


def test_sigkill_during_meta_training_resumes(tmp_path: Path) -> None:
    script, run_dir, log = tmp_path / "worker.py", tmp_path / "run", tmp_path / "worker.log"
    script.write_text(WORKER)
    ckpt = run_dir / "free" / "checkpoints" / "latest.pt"
    proc = _start(script, run_dir, log)
    try:
        assert wait_until(ckpt.exists, timeout=400), log.read_text()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)  # the whole server, mid meta-training
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = _pool(run_dir)
    assert len(before) == 3
    first_log = log.read_text()
    assert "DONE" not in first_log

    proc = _start(script, run_dir, log)
    try:
        proc.wait(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    second_log = log.read_text()[len(first_log) :]
    assert proc.returncode == 0, second_log[-3000:]
    assert "resuming run" in second_log
    assert "resumed from" in second_log and "at iteration 0" not in second_log
    assert "DONE" in second_log
    assert (tmp_path / "collect-calls.txt").read_text().split() == ["1"]  # not asked again
    assert _pool(run_dir) == before
