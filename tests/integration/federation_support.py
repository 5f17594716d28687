"""Helpers for the federation integration tests (not collected: no ``test_`` prefix)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# Small settings: conv4 owners, a few local epochs, two FREE iterations (one after warm-up),
# ten pool distillation steps, a handful of tasks.
FAST = (
    'local.epochs=8 fed.arch-mix="conv4" free.iterations=2 free.eval.every=1 '
    "free.eval.val-tasks=4 free.eval.test-tasks=4 free.screening.steps=2 "
    "free.screening.min-confidence=0.0 free.screening.min-accuracy=0.0 free.checkpoint-every=1 "
    "compare.val-tasks=4 free.warmup=1 free.pool-kd.steps=10"
)


def run_main(
    run_dir: Path, owners: int, run_config: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    """``scripts/run_main.sh`` with ``owners`` simulated owners and extra run config.

    Past ``timeout`` the script gets SIGTERM, so that its trap stops the SuperLink and the
    simulation it started (a SIGKILL would leave them running), then SIGKILL if it has not
    exited 60 s later; ``subprocess.TimeoutExpired`` is raised with its output.
    """
    env = dict(os.environ)
    env.update(FREEFED_BIN=str(BIN), FREEFED_OWNERS=str(owners), FREEFED_RUN_DIR=str(run_dir))
    command = ["bash", str(REPO / "scripts" / "run_main.sh"), "--run-config", run_config]
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                stdout, stderr = process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
            raise subprocess.TimeoutExpired(command, timeout, stdout, stderr) from None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (to check nothing was left running)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmd:
                found.append(int(entry.name))
    return found


def wait_until(predicate, timeout: float, interval: float = 0.5) -> bool:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until true or ``timeout``; return whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
