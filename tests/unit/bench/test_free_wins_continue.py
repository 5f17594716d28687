"""A longer distillation stage continues a cached shorter one and trains the same model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from free_common.config import FreeConfig, PoolDistillConfig
from free_common.data.base import ClassImages
from free_common.free.teachers import Teacher
from scripts.bench.free_wins import SiblingRun, _start_from_shorter_stage
from server.free_training import FreeTrainer
from tests.unit.free.synthetic import class_images, cpu_trainer, tiny_spec, trained_teacher

STAGE = replace(
    FreeConfig.preset("test"),
    iterations=2,
    pool_kd=PoolDistillConfig(enabled=True, teachers=2, steps=2, batch=8, eval_every=2),
)
LONGER = replace(STAGE, pool_kd=replace(STAGE.pool_kd, steps=4))
FREE_RUN = "free-s0-aaaa"


def _described(**runs: tuple[FreeConfig, str]) -> SiblingRun:
    """A :data:`SiblingRun` that knows ``runs`` (method -> its config and run directory)."""
    return lambda name: runs.get(name)


AS_BENCHED = _described(free=(STAGE, FREE_RUN))


@pytest.fixture(scope="module")
def pool() -> tuple[list[Teacher], ClassImages]:
    torch.set_num_threads(1)
    train = class_images(6, 20, seed=0)
    teachers = [
        trained_teacher(f"t{i}", train, c, seed=i, epochs=8, spec=tiny_spec(3, width=8))
        for i, c in enumerate([[0, 1, 2], [3, 4, 5]])
    ]
    return teachers, class_images(6, 10, seed=1, name="val")


def _train(config: FreeConfig, work: Path, pool: tuple[list[Teacher], ClassImages]) -> FreeTrainer:
    trainer = cpu_trainer(*pool, work, config)
    trainer.train(progress=False)
    return trainer


def _finished(work: Path, seconds: float) -> None:
    """Mark a cached run finished the way ``free_wins._trained`` does."""
    torch.save({"info": {"train_seconds": seconds}}, work / "model.pt")


def test_the_longer_stage_continues_the_shorter_one_to_the_same_model(
    tmp_path: Path, pool: tuple[list[Teacher], ClassImages]
) -> None:
    runs = tmp_path / "single"
    _train(STAGE, runs / FREE_RUN, pool)
    _finished(runs / FREE_RUN, 7.0)
    fresh = _train(LONGER, tmp_path / "fresh", pool)

    work = runs / "free_kd4000-s0-bbbb"
    assert _start_from_shorter_stage(work, "free_kd4000", LONGER, AS_BENCHED) == {
        "run": FREE_RUN,
        "train_seconds": 7.0,
    }
    continued = _train(LONGER, work, pool)
    assert continued.state.pool_kd["steps_done"] == 4
    assert continued.state.best_val == fresh.state.best_val
    for name, value in fresh.learner.state_dict().items():
        assert torch.equal(value, continued.learner.state_dict()[name]), name


def test_no_sibling_qualifies_unless_only_the_stage_length_differs(
    tmp_path: Path, pool: tuple[list[Teacher], ClassImages]
) -> None:
    runs = tmp_path / "single"
    _train(STAGE, runs / FREE_RUN, pool)
    other_lr = replace(LONGER, pool_kd=replace(LONGER.pool_kd, lr=5e-3))

    def start(
        work: str, method: str, config: FreeConfig, known: SiblingRun = AS_BENCHED
    ) -> dict[str, Any]:
        return _start_from_shorter_stage(runs / work, method, config, known)

    assert start("x-s0-c", "free_kd4000", LONGER) == {}  # unfinished
    _finished(runs / FREE_RUN, 1.0)
    assert start("x-s0-c", "free_kd4000", other_lr) == {}
    assert start("x-s0-c", "scratch", LONGER) == {}  # other variant
    assert start("x-s1-c", "free_kd4000", replace(LONGER, seed=1)) == {}
    assert start("x-s0-c", "free_kd4000", STAGE) == {}  # not longer
    # the directory was made under another definition of the method (another key)
    assert start("x-s0-c", "free_kd4000", LONGER, _described(free=(STAGE, "free-s0-zzzz"))) == {}
    # the checkpoint was trained with another configuration than the method's own
    stale = replace(STAGE, pool_kd=replace(STAGE.pool_kd, lr=5e-3))
    assert start("x-s0-c", "free_kd4000", other_lr, _described(free=(stale, FREE_RUN))) == {}
    assert not (runs / "x-s0-c").exists()


def test_a_lever_that_chooses_other_teachers_never_qualifies(
    tmp_path: Path, pool: tuple[list[Teacher], ClassImages]
) -> None:
    """The case that once continued the wrong run: a lever's checkpoint written before its
    choice of teachers was a field reads, as a dict, like today's default. Its method's
    configuration differs from the default's, so it must not qualify."""
    runs = tmp_path / "mixed"
    lever = "free_same_input"
    same_input = replace(STAGE, pool_kd=replace(STAGE.pool_kd, choose="same-input"))
    _train(STAGE, runs / f"{lever}-s0-aaaa", pool)  # its checkpoint holds no "choose"
    _finished(runs / f"{lever}-s0-aaaa", 1.0)
    known = _described(**{lever: (same_input, f"{lever}-s0-aaaa")})
    assert _start_from_shorter_stage(runs / "free-s0-b", "free", LONGER, known) == {}
    assert not (runs / "free-s0-b").exists()
