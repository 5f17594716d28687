from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import server.free_training as free_training
from free_common.config import FreeConfig
from free_common.data.base import ClassImages
from free_common.evaluation import EvalResult
from free_common.free.best_teacher import rank_by_nearest_centroid
from free_common.free.errors import NonFiniteLossError
from free_common.free.teachers import InMemoryTeachers, Teacher, teacher_from_state_dict
from server.checkpoint import load_checkpoint
from server.free_training import FreeTrainer, FreeTrainingError
from tests.unit.free.synthetic import random_teacher, tiny_spec

CFG = FreeConfig.preset("test")


def _trainer(
    teachers: list[Teacher],
    val: ClassImages,
    test: ClassImages | None,
    work: Path,
    config: FreeConfig = CFG,
) -> FreeTrainer:
    return FreeTrainer(
        config,
        InMemoryTeachers(teachers),
        val_data=val,
        test_data=test,
        work_dir=work,
        device="cpu",
    )


def test_model_selection_uses_meta_val_never_meta_test(
    teachers: list[Teacher],
    val_split: ClassImages,
    test_split: ClassImages,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    val_scores = iter([0.4, 0.9, 0.1])  # iterations 2, 4, 6: the best is iteration 4

    def fake_evaluate(model: nn.Module, data: ClassImages, **kw: Any) -> EvalResult:
        calls.append(data.name)
        mean = next(val_scores) if data is val_split else 0.77
        return EvalResult(mean, 0.01, np.zeros(1), 1, 3, 1, 2, "finetune", 10, 0.01, 0, 0.0)

    monkeypatch.setattr(free_training, "evaluate", fake_evaluate)
    config = replace(CFG, iterations=6)
    result = _trainer(teachers, val_split, test_split, tmp_path, config).train(progress=False)
    assert calls == ["val", "val", "val", "test"]  # meta-test only once, after training
    assert result.best_iteration == 4 and result.best_val == pytest.approx(0.9)
    assert result.test == {1: {"mean": 0.77, "ci95": 0.01}}
    vals = [h for h in result.history if h["kind"] == "val"]
    assert [h["iteration"] for h in vals] == [2, 4, 6]


def test_every_sampled_teachers_images_reach_the_bank(
    teachers: list[Teacher], val_split: ClassImages, tmp_path: Path
) -> None:
    config = replace(CFG, iterations=2, teachers_per_iteration=3, seed=1)
    trainer = _trainer(teachers, val_split, None, tmp_path, config)
    result = trainer.train(progress=False)
    sampled = result.history[-2]["teachers"] if result.history[-1]["kind"] == "val" else []
    assert len(set(sampled)) >= 2
    expected = {f"{t}/{i}" for t in sampled for i in range(3)}
    assert expected <= set(trainer.bank.keys)
    per_class = config.inversion.images_per_class * sampled.count(sampled[0])
    assert trainer.bank.count(f"{sampled[0]}/0") == min(per_class, config.memory.max_per_class)


def test_checkpoint_holds_everything(
    teachers: list[Teacher], val_split: ClassImages, tmp_path: Path
) -> None:
    trainer = _trainer(teachers, val_split, None, tmp_path)
    trainer.train(progress=False)
    state = load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    assert state is not None
    for key in ("config", "learner", "optimizer", "inverter", "bank", "rng", "run"):
        assert key in state
    assert set(state["inverter"]) == {"generator", "optimizer"}
    assert state["inverter"]["optimizer"]["state"]  # the generator's Adam moments
    assert state["optimizer"]["state"]  # the meta-learner's Adam moments
    assert set(state["rng"]) == {"trainer", "global"}
    run = state["run"]
    assert run["iteration"] == CFG.iterations and run["best_state"] is not None
    assert len(run["history"]) > CFG.iterations and run["screened"].keys() == {"t0", "t1", "t2"}
    assert len(state["bank"]["images"]) > 0


class _Poisonable(nn.Module):
    """Wraps a classifier; once ``poisoned`` it returns NaN logits."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.poisoned = inner, False

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(x)
        return out * float("nan") if self.poisoned else out


def test_nan_loss_stops_with_iteration_and_term_and_keeps_checkpoint(
    teachers: list[Teacher], val_split: ClassImages, tmp_path: Path
) -> None:
    wrapped = [Teacher(t.teacher_id, t.spec, _Poisonable(t.model), t.class_keys) for t in teachers]
    trainer = _trainer(wrapped, val_split, None, tmp_path, replace(CFG, iterations=2))
    trainer.train(progress=False)
    path = tmp_path / "checkpoints" / "latest.pt"
    before = path.read_bytes()
    for t in wrapped:
        t.model.poisoned = True  # type: ignore[assignment]
    with pytest.raises(NonFiniteLossError, match="iteration 3") as info:
        trainer.train(progress=False, iterations=4)
    assert info.value.iteration == 3 and info.value.term == "inversion/ce"
    assert path.read_bytes() == before
    state = load_checkpoint(path)
    assert state is not None and state["run"]["iteration"] == 2


def test_screening_excludes_bad_teachers_with_reasons(
    teachers: list[Teacher], val_split: ClassImages, tmp_path: Path
) -> None:
    wide = random_teacher("wide", tiny_spec(7))
    broken_state = {k: v.clone() for k, v in teachers[0].model.state_dict().items()}
    broken_state["head.weight"][0, 0] = float("inf")
    broken = teacher_from_state_dict("broken", teachers[0].spec, broken_state)
    trainer = _trainer([*teachers, wide, broken], val_split, None, tmp_path)
    result = trainer.train(progress=False)
    assert set(result.excluded) == {"wide", "broken"}
    assert "exceed" in result.excluded["wide"] and "non-finite" in result.excluded["broken"]
    sampled = {t for h in result.history if h["kind"] == "iteration" for t in h["teachers"]}
    assert sampled.isdisjoint({"wide", "broken"})


def test_low_recovery_quality_is_excluded(
    teachers: list[Teacher], val_split: ClassImages, tmp_path: Path
) -> None:
    strict = replace(CFG.screening, min_accuracy=1.0, min_confidence=1.0)
    config = replace(CFG, screening=strict)
    with pytest.raises(FreeTrainingError, match="no usable teacher"):
        _trainer(teachers, val_split, None, tmp_path, config).train(progress=False)


def test_new_teachers_are_screened_and_sampled_in_a_later_round(
    teachers: list[Teacher], val_split: ClassImages, tmp_path: Path
) -> None:
    config = replace(CFG, teachers_per_iteration=4)
    trainer = _trainer(teachers[:2], val_split, None, tmp_path, config)
    trainer.train(progress=False, iterations=2)
    trainer.add_teachers([teachers[2]])
    result = trainer.train(progress=False, iterations=5)
    assert "t2" in trainer.state.screened
    later = {
        t
        for h in result.history
        if h["kind"] == "iteration" and h["iteration"] > 2
        for t in h["teachers"]
    }
    assert "t2" in later
    assert result.iterations_done == 5


def test_fresh_trainer_resumes_from_checkpoint(
    teachers: list[Teacher], val_split: ClassImages, tmp_path: Path
) -> None:
    _trainer(teachers, val_split, None, tmp_path, replace(CFG, iterations=2)).train(progress=False)
    again = _trainer(teachers, val_split, None, tmp_path)
    assert again.state.iteration == 2
    result = again.train(progress=False)
    assert result.iterations_done == CFG.iterations
    assert [h["iteration"] for h in result.history if h["kind"] == "iteration"] == [1, 2, 3, 4]
    assert isinstance(result.model, nn.Module) and result.spec.num_classes == 5
    assert not any(
        isinstance(m, torch.nn.BatchNorm2d) and m.track_running_stats
        for m in result.model.modules()
    )


def test_the_best_teacher_start_takes_the_backbone_the_comparison_would_choose(
    teachers: list[Teacher], val_split: ClassImages, tmp_path: Path
) -> None:
    """`meta_learner.init = "best_teacher"`: the learner starts from the backbone of the
    owner that `rank_by_nearest_centroid` ranks first, and iteration 0 is validated."""
    learner = replace(CFG.meta_learner, width=8, init="best_teacher", init_val_tasks=3)
    config = replace(CFG, meta_learner=learner, iterations=1)
    other = random_teacher("narrow", tiny_spec(3, width=4), seed=9)  # another backbone
    trainer = _trainer([*teachers, other], val_split, None, tmp_path, config)
    trainer._start_from_best_teacher()
    ev = config.eval
    ranking = rank_by_nearest_centroid(
        teachers,
        val_split,
        n_way=ev.n_way,
        k_shot=min(ev.shots),
        q_query=ev.q_query,
        n_tasks=3,
        seed=ev.seed + 1,
    )
    assert ranking.best is not None
    init = trainer.state.init
    assert init is not None and init["teacher"] == ranking.best.teacher_id
    assert init["candidates"] == len(teachers)  # the narrow owner cannot compete
    start = trainer.learner.state_dict()
    backbone = [k for k in start if k.startswith("backbone.")]  # batch statistics: no buffers
    assert backbone
    for name in backbone:
        torch.testing.assert_close(start[name], ranking.best.model.state_dict()[name])
    assert [h["iteration"] for h in trainer.state.history if h["kind"] == "val"] == [0]
