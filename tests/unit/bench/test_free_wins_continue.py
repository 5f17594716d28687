"""A longer distillation stage continues a cached shorter one and trains the same model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from free_common.config import FreeConfig, PoolDistillConfig
from free_common.data.base import ClassImages
from free_common.free.teachers import Teacher
from scripts.bench.free_wins import _start_from_shorter_stage
from server.free_training import FreeTrainer
from tests.unit.free.synthetic import class_images, cpu_trainer, tiny_spec, trained_teacher

STAGE = replace(
    FreeConfig.preset("test"),
    iterations=2,
    pool_kd=PoolDistillConfig(enabled=True, teachers=2, steps=2, batch=8, eval_every=2),
)
LONGER = replace(STAGE, pool_kd=replace(STAGE.pool_kd, steps=4))


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
    _train(STAGE, runs / "free-s0-aaaa", pool)
    _finished(runs / "free-s0-aaaa", 7.0)
    fresh = _train(LONGER, tmp_path / "fresh", pool)

    work = runs / "free_kd4000-s0-bbbb"
    assert _start_from_shorter_stage(work, "free_kd4000", LONGER) == {
        "run": "free-s0-aaaa",
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
    _train(STAGE, runs / "free-s0-aaaa", pool)
    other_lr = replace(LONGER, pool_kd=replace(LONGER.pool_kd, lr=5e-3))
    assert _start_from_shorter_stage(runs / "x-s0-c", "free_kd4000", LONGER) == {}  # unfinished
    _finished(runs / "free-s0-aaaa", 1.0)
    assert _start_from_shorter_stage(runs / "x-s0-c", "free_kd4000", other_lr) == {}
    assert _start_from_shorter_stage(runs / "x-s0-c", "scratch", LONGER) == {}  # other variant
    assert _start_from_shorter_stage(runs / "x-s1-c", "free_kd4000", replace(LONGER, seed=1)) == {}
    assert _start_from_shorter_stage(runs / "x-s0-c", "free_kd4000", STAGE) == {}  # not longer
    assert not (runs / "x-s0-c").exists()
