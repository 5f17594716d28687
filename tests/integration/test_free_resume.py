"""A FREE run killed with SIGKILL resumes and ends bit-identical to an uninterrupted run.

The worker (this file run as a script) trains tiny teachers, then runs the FREE trainer
with a checkpoint every 2 iterations. In "kill" mode it SIGKILLs itself as soon as
iteration 3 has been computed (after the checkpoint of iteration 2, before the next one),
so work is lost and must be redone. A second worker run resumes from the checkpoint and
finishes. Its final meta-learner, meta-generator, optimisers and memory bank must equal,
bitwise, those of a run that was never interrupted (CPU, deterministic algorithms).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
KILL_AT = "iter 3:"


def _run_worker(work_dir: Path, out: Path, *, kill: bool) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(Path(__file__)), str(work_dir), str(out)]
    if kill:
        cmd.append("--kill")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _flat(state: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a nested dict/list, keyed by its path."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(state, torch.Tensor):
        out[prefix] = state
    elif isinstance(state, dict):
        for k, v in state.items():
            out.update(_flat(v, f"{prefix}/{k}"))
    elif isinstance(state, list | tuple):
        for i, v in enumerate(state):
            out.update(_flat(v, f"{prefix}/{i}"))
    return out


@pytest.mark.integration
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    # Prepare / Execute: an uninterrupted run, and a killed-then-resumed run.
    full = _run_worker(tmp_path / "full", tmp_path / "full.pt", kill=False)
    assert full.returncode == 0, full.stderr[-3000:]
    killed = _run_worker(tmp_path / "resumed", tmp_path / "killed.pt", kill=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (tmp_path / "killed.pt").exists()
    resumed = _run_worker(tmp_path / "resumed", tmp_path / "resumed.pt", kill=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr and "at iteration 2" in resumed.stderr

    # Assert: every tensor of the final state is bitwise equal.
    a = _flat(torch.load(tmp_path / "full.pt", weights_only=True))
    b = _flat(torch.load(tmp_path / "resumed.pt", weights_only=True))
    assert a.keys() == b.keys()
    assert len(a) > 20
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resume"


def _worker(work_dir: Path, out: Path, kill: bool) -> None:
    """Train teachers, run FREE (test preset, 6 iterations), save the final state."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    from dataclasses import replace

    from free_common.config import FreeConfig
    from free_common.free.teachers import InMemoryTeachers
    from server.free_training import FreeTrainer
    from tests.unit.free.synthetic import class_images, trained_teacher

    train = class_images(9, 20, seed=0)
    val = class_images(6, 10, seed=1, name="val")
    teachers = [
        trained_teacher(f"t{i}", train, c, seed=i, epochs=5)
        for i, c in enumerate([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    ]
    config = replace(FreeConfig.preset("test"), iterations=6, checkpoint_every=2)
    logging.basicConfig(level=logging.INFO)
    if kill:
        logging.getLogger("server.free_training").addHandler(_KillHandler())
    trainer = FreeTrainer(
        config,
        InMemoryTeachers(teachers),
        val_data=val,
        test_data=None,
        work_dir=work_dir,
        device="cpu",
    )
    trainer.train(progress=False)
    final = {
        "learner": trainer.learner.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "inverter": trainer.inverter.state_dict(),
        "bank": trainer.bank.state_dict(),
        "best": trainer.state.best_state,
        "rng": trainer.rng.get_state(),
    }
    torch.save(final, out)


class _KillHandler(logging.Handler):
    """SIGKILLs this process when the log shows iteration 3 computed (not checkpointed)."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(KILL_AT):
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--kill", action="store_true")
    args = parser.parse_args()
    _worker(args.work_dir, args.out, args.kill)
