import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import free_common.free.pool_distillation as pool_distillation
import server.free_training as free_training
from free_common.config import ConfigError, FreeConfig, PoolDistillConfig
from free_common.data.base import ClassImages
from free_common.evaluation import EvalResult
from free_common.free.best_teacher import at_input, rank_by_nearest_centroid, rank_per_domain
from free_common.free.meta_learner import build_meta_learner
from free_common.free.pool_distillation import PoolDistiller, feature_teacher, precision_dtype
from free_common.free.teachers import Teacher, teacher_from_state_dict
from free_common.models import build_model
from server.checkpoint import load_checkpoint
from tests.unit.free.synthetic import cpu_trainer, tiny_spec, trained_teacher

CFG = FreeConfig.preset("test")
STAGE = replace(
    CFG,
    iterations=2,
    pool_kd=PoolDistillConfig(enabled=True, teachers=2, steps=4, batch=8, eval_every=2),
)


def _learner() -> nn.Module:
    torch.manual_seed(0)
    return build_meta_learner(CFG.meta_learner)


def _distiller(
    teachers: list[Teacher],
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    learner_dtype: torch.dtype = torch.float32,
) -> PoolDistiller:
    return PoolDistiller(
        _learner(),  # type: ignore[arg-type]
        teachers,
        lr=1e-2,
        shift=1,
        rng=torch.Generator().manual_seed(seed),
        device=torch.device("cpu"),
        teacher_dtype=dtype,
        learner_dtype=learner_dtype,
    )


def test_the_student_learns_the_teachers_features_on_a_fixed_batch(teachers: list[Teacher]) -> None:
    distiller = _distiller(teachers[:2])
    images = torch.rand(16, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    first = distiller.step(images, torch.Generator().manual_seed(2))
    for _ in range(40):
        last = distiller.step(images, torch.Generator().manual_seed(2))
    assert 0 <= last < 0.5 * first


def test_the_student_trains_channels_last_with_the_same_weights(teachers: list[Teacher]) -> None:
    # Prepare: a grey-image learner; its first convolution (C_out, 1, 3, 3) is ambiguous
    learner = _learner()
    before = {k: v.clone() for k, v in learner.state_dict().items()}

    # Act
    distiller = PoolDistiller(
        learner,  # type: ignore[arg-type]
        teachers[:2],
        lr=1e-2,
        shift=1,
        rng=torch.Generator().manual_seed(0),
        device=torch.device("cpu"),
    )
    values_kept = all(torch.equal(v, before[k]) for k, v in learner.state_dict().items())
    distiller.step(torch.rand(8, 1, 16, 16), torch.Generator().manual_seed(2))

    # Assert: every convolution weight is channels-last, before and after an Adam step
    convs = [p for p in learner.parameters() if p.ndim == 4]
    assert values_kept and convs
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert convs[0].stride()[1] == 1


def test_teachers_are_left_untouched_and_run_with_batch_statistics(
    teachers: list[Teacher],
) -> None:
    before = [copy.deepcopy(t.model.state_dict()) for t in teachers[:2]]
    distiller = _distiller(teachers[:2])
    for _ in range(3):
        distiller.step(torch.rand(8, 1, 16, 16), torch.Generator().manual_seed(0))
    for teacher, saved in zip(teachers[:2], before, strict=True):
        for name, value in teacher.model.state_dict().items():
            assert torch.equal(value, saved[name]), name
    extractor = feature_teacher(teachers[0], torch.device("cpu"))
    assert all(
        not m.track_running_stats for m in extractor.modules() if isinstance(m, nn.BatchNorm2d)
    )
    assert not any(p.requires_grad for p in extractor.parameters())


def test_each_teacher_gets_a_projector_to_its_own_feature_width() -> None:
    resnet = teacher_from_state_dict(
        "r",
        tiny_spec(4, arch="resnet10", width=4),
        build_model(tiny_spec(4, arch="resnet10", width=4)).state_dict(),
    )
    conv = teacher_from_state_dict(
        "c", tiny_spec(3, width=8), build_model(tiny_spec(3, width=8)).state_dict()
    )
    distiller = _distiller([conv, resnet])
    learner_features = distiller.learner.num_features
    assert [(p.in_features, p.out_features) for p in distiller.projectors] == [
        (learner_features, distiller.extractors[0].num_features),
        (learner_features, distiller.extractors[1].num_features),
    ]
    assert distiller.extractors[0].num_features != distiller.extractors[1].num_features
    assert np.isfinite(distiller.step(torch.rand(8, 1, 16, 16), torch.Generator().manual_seed(0)))


def test_state_restores_exactly_and_refuses_other_teachers(teachers: list[Teacher]) -> None:
    images = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    one = _distiller(teachers[:2])
    one.step(images, torch.Generator().manual_seed(0))
    twin = _distiller(teachers[:2], seed=9)  # other projector draws, replaced by the state
    twin.learner.load_state_dict(one.learner.state_dict())
    twin.load_state_dict(copy.deepcopy(one.state_dict()))
    assert one.step(images, torch.Generator().manual_seed(5)) == twin.step(
        images, torch.Generator().manual_seed(5)
    )
    with pytest.raises(ValueError, match="saved pool distillation is for"):
        _distiller([teachers[2], teachers[0]]).load_state_dict(one.state_dict())
    with pytest.raises(ValueError, match="at least one teacher"):
        _distiller([])


@pytest.mark.parametrize(
    "field",
    [
        {"teachers": 0},
        {"steps": 0},
        {"batch": 1},
        {"lr": 0.0},
        {"shift": -1},
        {"eval_every": 0},
        {"choose": "best"},
        {"teacher_precision": "float16"},
    ],
)
def test_bad_pool_distillation_settings_are_refused(field: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="pool_kd"):
        PoolDistillConfig(**field)  # type: ignore[arg-type]


def test_the_run_config_reaches_the_stage() -> None:
    config = FreeConfig.from_run_config(
        {"free.preset": "test", "free.pool-kd.enabled": True, "free.pool-kd.steps": 7}
    )
    assert config.pool_kd.enabled and config.pool_kd.steps == 7
    assert not FreeConfig.preset("paper").pool_kd.enabled


def test_choose_is_hashed_only_when_it_is_not_the_default() -> None:
    shipped = FreeConfig.preset("xkd-cpu")
    assert shipped.pool_kd.choose == "per-domain"
    assert "choose" not in shipped.to_dict()["pool_kd"]  # keys hashed before it existed hold
    same_input = replace(shipped, pool_kd=replace(shipped.pool_kd, choose="same-input"))
    assert same_input.to_dict()["pool_kd"]["choose"] == "same-input"
    assert FreeConfig.from_dict(same_input.to_dict()) == same_input
    assert FreeConfig.from_dict(shipped.to_dict()) == shipped
    run = FreeConfig.from_run_config({"free.preset": "test", "free.pool-kd.choose": "same-input"})
    assert run.pool_kd.choose == "same-input"


def test_bfloat16_teachers_give_float32_targets_near_the_float32_ones(
    teachers: list[Teacher],
) -> None:
    # Prepare: the same learner, projectors and batch; teachers in float32 and in bfloat16
    images = torch.rand(16, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    exact, low = _distiller(teachers[:2]), _distiller(teachers[:2], dtype=torch.bfloat16)

    # Act
    pairs = [
        (exact._target(e, t, images), low._target(f, t, images))
        for t, e, f in zip(teachers[:2], exact.extractors, low.extractors, strict=True)
    ]
    exact_loss = exact.step(images, torch.Generator().manual_seed(2))
    low_loss = low.step(images, torch.Generator().manual_seed(2))

    # Assert: float32 targets within bfloat16 rounding; the learner still trains in float32
    for want, got in pairs:
        assert got.dtype == torch.float32 and not torch.equal(want, got)
        assert torch.nn.functional.cosine_similarity(want, got, dim=1).min() > 0.999
    assert abs(exact_loss - low_loss) < 1e-2
    assert all(p.dtype == torch.float32 for p in low.learner.parameters())
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in low.learner.parameters())


def test_a_bfloat16_learner_keeps_float32_weights_and_learns_the_features(
    teachers: list[Teacher],
) -> None:
    # Prepare: the same learner, projectors and batch; the learner's passes in float32 and
    # under bfloat16 autocast
    images = torch.rand(16, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    exact = _distiller(teachers[:2])
    low = _distiller(teachers[:2], learner_dtype=torch.bfloat16)

    # Act
    exact_first = exact.step(images, torch.Generator().manual_seed(2))
    low_first = low.step(images, torch.Generator().manual_seed(2))
    for _ in range(40):
        low_last = low.step(images, torch.Generator().manual_seed(2))

    # Assert: the same loss up to bfloat16 rounding, float32 weights, gradients and Adam
    # state, and the features learnt as in float32
    assert abs(exact_first - low_first) < 2e-2
    params = [*low.learner.parameters(), *low.projectors.parameters()]
    assert all(p.dtype == torch.float32 for p in params)
    grads = [p.grad for p in params if p.grad is not None]  # the head is not in the stage
    assert len(grads) >= len(params) - 2 and all(g.dtype == torch.float32 for g in grads)
    moments = [v for state in low.optimizer.state.values() for v in state.values()]
    assert all(m.dtype == torch.float32 for m in moments if m.is_floating_point())
    assert 0 <= low_last < 0.5 * low_first
    with pytest.raises(ValueError, match="learner_dtype must be float32 or bfloat16"):
        _distiller(teachers[:1], learner_dtype=torch.float16)


def test_learner_precision_is_part_of_the_key_unless_float32() -> None:
    shipped = FreeConfig.preset("xkd-cpu")
    low = replace(shipped, pool_kd=replace(shipped.pool_kd, learner_precision="auto"))
    assert low.to_dict()["pool_kd"]["learner_precision"] == "auto"
    assert FreeConfig.from_dict(low.to_dict()) == low
    exact = replace(shipped, pool_kd=replace(shipped.pool_kd, learner_precision="float32"))
    assert "learner_precision" not in exact.to_dict()["pool_kd"]  # keys from before it hold
    assert FreeConfig.from_dict(exact.to_dict()) == exact
    run = FreeConfig.from_run_config(
        {"free.preset": "xkd-cpu", "free.pool-kd.learner-precision": "auto"}
    )
    assert run == low
    with pytest.raises(ConfigError, match="learner_precision must be one of"):
        FreeConfig.from_run_config({"free.pool-kd.learner-precision": "fp16"})


def test_teacher_precision_resolves_to_a_format_the_device_computes_natively(
    monkeypatch: pytest.MonkeyPatch, teachers: list[Teacher]
) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert precision_dtype("float32", cpu) == torch.float32
    assert precision_dtype("bfloat16", cpu) == torch.bfloat16
    monkeypatch.setattr(pool_distillation, "_cpu_has_native_bf16", lambda: True)
    assert precision_dtype("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(pool_distillation, "_cpu_has_native_bf16", lambda: False)
    assert precision_dtype("auto", cpu) == torch.float32  # emulated bfloat16 can be slower
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert precision_dtype("auto", cuda) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert precision_dtype("auto", cuda) == torch.float32
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        precision_dtype("half", cpu)
    with pytest.raises(ValueError, match="teacher_dtype must be float32 or bfloat16"):
        _distiller(teachers[:1], dtype=torch.float16)


def test_teacher_precision_comes_from_the_run_config_and_never_rekeys() -> None:
    run = FreeConfig.from_run_config(
        {"free.preset": "xkd-cpu", "free.pool-kd.teacher-precision": "float32"}
    )
    shipped = FreeConfig.preset("xkd-cpu")
    assert run.pool_kd.teacher_precision == "float32"
    assert shipped.pool_kd.teacher_precision == "auto"
    assert run.to_dict() == shipped.to_dict()  # an execution setting, like the device
    assert (
        "pool_kd"
        not in replace(CFG, pool_kd=PoolDistillConfig(teacher_precision="float32")).to_dict()
    )
    assert FreeConfig.from_dict(shipped.to_dict()) == shipped
    with pytest.raises(ConfigError, match="teacher_precision must be one of"):
        FreeConfig.from_run_config({"free.pool-kd.teacher-precision": "fp8"})


@pytest.mark.parametrize(("teacher", "learner"), [("float32", "bfloat16"), ("bfloat16", "float32")])
def test_the_stage_records_its_number_formats(
    teacher: str, learner: str, teachers: list[Teacher], val_split: ClassImages, tmp_path: Path
) -> None:
    stage = replace(STAGE.pool_kd, teacher_precision=teacher, learner_precision=learner)
    result = cpu_trainer(teachers, val_split, tmp_path, replace(STAGE, pool_kd=stage)).train(
        progress=False
    )
    assert result.pool_kd["teacher_dtype"] == teacher
    assert result.pool_kd["learner_dtype"] == learner
    assert result.pool_kd["steps_done"] == 4 and np.isfinite(result.best_val)


def test_per_domain_choice_takes_teachers_of_any_input(
    teachers: list[Teacher],
    train_split: ClassImages,
    val_split: ClassImages,
    tmp_path: Path,
) -> None:
    rgb_split = at_input(train_split, 3, 16)
    rgb = [
        trained_teacher(
            f"rgb{i}", rgb_split, c, seed=i, epochs=12, spec=tiny_spec(3, width=8, channels=3)
        )
        for i, c in enumerate([[0, 1, 2], [3, 4, 5]])
    ]
    config = replace(STAGE, pool_kd=replace(STAGE.pool_kd, teachers=3))
    assert config.pool_kd.choose == "per-domain"
    rankings = rank_per_domain(
        [*teachers, *rgb],
        val_split,
        n_way=3,
        k_shot=1,
        q_query=2,
        n_tasks=config.pool_kd.rank_tasks,
        seed=1,
    )
    expected = sorted(rankings[""].scores, key=lambda i: -rankings[""].scores[i])[:3]
    result = cpu_trainer([*teachers, *rgb], val_split, tmp_path, config).train(progress=False)
    assert result.pool_kd["candidates"] == 5
    assert result.pool_kd["teachers"] == expected
    assert result.pool_kd["domains"] == {}  # one domain: one ranking
    assert result.pool_kd["steps_done"] == 4


def test_the_stage_distils_the_best_ranked_teachers_and_selection_sees_it(
    teachers: list[Teacher], val_split: ClassImages, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ranking = rank_by_nearest_centroid(
        teachers, val_split, n_way=3, k_shot=1, q_query=2, n_tasks=STAGE.pool_kd.rank_tasks, seed=1
    )
    expected = sorted(ranking.scores, key=lambda i: -ranking.scores[i])[:2]
    real_evaluate = free_training.evaluate
    val_scores = iter([0.5, 0.4, 0.8])  # iteration 2, then the stage's steps 2 and 4

    def fake_evaluate(model: nn.Module, data: ClassImages, **kw: Any) -> Any:
        if kw["n_tasks"] == STAGE.pool_kd.rank_tasks:  # the ranking: real
            return real_evaluate(model, data, **kw)
        return EvalResult(next(val_scores), 0.01, np.zeros(1), 1, 3, 1, 2, "proto", 0, 0.0, 0, 0.0)

    monkeypatch.setattr(free_training, "evaluate", fake_evaluate)
    monkeypatch.setattr("free_common.free.best_teacher.evaluate", fake_evaluate)
    result = cpu_trainer(teachers, val_split, tmp_path, STAGE).train(progress=False)
    assert result.pool_kd["teachers"] == expected
    assert result.pool_kd["start"]["iteration"] == 2 and result.pool_kd["steps_done"] == 4
    assert (result.best_iteration, result.best_pool_kd_step) == (2, 4)
    stage = [h for h in result.history if h["kind"] == "pool_kd"]
    assert [h["step"] for h in stage] == [2, 4] and all(h["loss"] > 0 for h in stage)
    vals = [(h["iteration"], h["pool_kd_step"]) for h in result.history if h["kind"] == "val"]
    assert vals == [(2, 0), (2, 2), (2, 4)]


def test_selection_keeps_the_meta_trained_model_when_the_stage_does_not_help(
    teachers: list[Teacher], val_split: ClassImages, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scores = iter([0.9, 0.1, 0.2])

    def fake_evaluate(model: nn.Module, data: ClassImages, **kw: Any) -> Any:
        return EvalResult(next(scores), 0.01, np.zeros(1), 1, 3, 1, 2, "proto", 0, 0.0, 0, 0.0)

    monkeypatch.setattr(free_training, "evaluate", fake_evaluate)
    trainer = cpu_trainer(teachers, val_split, tmp_path, STAGE)
    monkeypatch.setattr(
        trainer, "_choose_distilled", lambda choose, k, n: ({"t0": ("", 0.9), "t1": ("", 0.8)}, 3)
    )
    result = trainer.train(progress=False)
    assert (result.best_iteration, result.best_pool_kd_step) == (2, 0)
    saved = load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    assert saved is not None and saved["run"]["best_step"] == 0
    for name, value in result.model.state_dict().items():
        assert torch.equal(value, saved["run"]["best_state"][name])


def test_a_killed_stage_resumes_to_the_same_model(
    teachers: list[Teacher], val_split: ClassImages, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = cpu_trainer(teachers, val_split, tmp_path / "whole", STAGE)
    expected = whole.train(progress=False)
    real_step = PoolDistiller.step
    calls = {"n": 0}

    def dying_step(self: PoolDistiller, images: torch.Tensor, rng: torch.Generator) -> float:
        calls["n"] += 1
        if calls["n"] == 3:  # after the checkpoint at step 2
            raise KeyboardInterrupt
        return real_step(self, images, rng)

    monkeypatch.setattr(PoolDistiller, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        cpu_trainer(teachers, val_split, tmp_path / "killed", STAGE).train(progress=False)
    monkeypatch.setattr(PoolDistiller, "step", real_step)
    resumed = cpu_trainer(teachers, val_split, tmp_path / "killed", STAGE)
    assert resumed.state.pool_kd["steps_done"] == 2
    result = resumed.train(progress=False)
    assert result.pool_kd["steps_done"] == 4
    for name, value in expected.model.state_dict().items():
        assert torch.equal(value, result.model.state_dict()[name]), name
    assert (
        cpu_trainer(teachers, val_split, tmp_path / "killed", STAGE).train(progress=False).pool_kd
        == result.pool_kd
    )


def test_the_stage_run_in_parts_gives_the_model_of_one_run(
    teachers: list[Teacher], val_split: ClassImages, tmp_path: Path
) -> None:
    expected = cpu_trainer(teachers, val_split, tmp_path / "whole", STAGE).train(progress=False)
    trainer = cpu_trainer(teachers, val_split, tmp_path / "parts", STAGE)
    assert trainer.train(progress=False, pool_kd_steps=0).pool_kd == {}
    assert not trainer.finished
    part = trainer.train(progress=False, pool_kd_steps=2)
    assert part.pool_kd["steps_done"] == 2 and not trainer.finished
    assert [h["step"] for h in part.history if h["kind"] == "pool_kd"] == [2]
    result = trainer.train(progress=False)
    assert trainer.finished
    assert result.pool_kd == expected.pool_kd | {"seconds": result.pool_kd["seconds"]}
    for name, value in expected.model.state_dict().items():
        assert torch.equal(value, result.model.state_dict()[name]), name
    with pytest.raises(ValueError, match="pool_kd_steps must be >= 0"):
        cpu_trainer(teachers, val_split, tmp_path / "bad", STAGE).train(
            progress=False, pool_kd_steps=-1
        )


def test_the_stage_is_skipped_with_a_reason_when_no_teacher_fits(
    teachers: list[Teacher], val_split: ClassImages, tmp_path: Path
) -> None:
    rgb = [
        teacher_from_state_dict(
            f"rgb{i}", tiny_spec(3, channels=3), build_model(tiny_spec(3, channels=3)).state_dict()
        )
        for i in range(2)
    ]
    same_input = replace(STAGE, pool_kd=replace(STAGE.pool_kd, choose="same-input"))
    trainer = cpu_trainer([*teachers, *rgb], val_split, tmp_path, same_input)
    monkeypatch_rank = trainer._rank_pool
    seen: list[str] = []

    def recording(fits: Any, n: int) -> Any:
        seen.extend(t.teacher_id for t in [*teachers, *rgb] if fits(t.spec))
        return monkeypatch_rank(fits, n)

    trainer._rank_pool = recording  # type: ignore[method-assign]
    result = trainer.train(progress=False)
    assert "rgb0" not in seen and "rgb0" not in result.pool_kd["teachers"]
    only_rgb = cpu_trainer(rgb, val_split, tmp_path / "rgb", same_input)
    assert (
        only_rgb.train(progress=False).pool_kd["skipped"] == "no teacher with the learner's input"
    )
