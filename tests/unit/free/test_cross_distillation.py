import copy
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from free_common.config import CrossDistillConfig, FreeConfig
from free_common.data.base import ClassImages
from free_common.free.cross_distillation import TeacherHeads, cross_distill_step, ridge_fit
from free_common.free.distillation import kd_loss
from free_common.free.meta_learner import build_meta_learner
from free_common.free.teachers import InMemoryTeachers, Teacher
from server.checkpoint import load_checkpoint
from server.free_training import FreeTrainer

CFG = FreeConfig.preset("test")
CROSS = replace(
    CFG,
    cross_kd=CrossDistillConfig(enabled=True, steps=2, batch=8, teachers=2),
    meta_learner=replace(CFG.meta_learner, own_task_kd=False),
)


def _student() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_meta_learner(CFG.meta_learner)


@pytest.mark.parametrize("init", ["ridge", "random"])
def test_a_head_is_made_once_per_teacher_with_the_teachers_class_count(init: str) -> None:
    heads = TeacherHeads(16, 1e-3, torch.device("cpu"), init)
    rng = torch.Generator().manual_seed(0)
    features = torch.randn(20, 16)
    first = heads.head("a", features, torch.randn(20, 3), rng)
    assert (
        first.weight.shape == (3, 16)
        and heads.head("a", features, torch.randn(20, 3), rng) is first
    )
    assert heads.head("b", features, torch.randn(20, 2), rng).weight.shape == (2, 16)
    assert len(heads) == 2


def test_ridge_fit_recovers_a_linear_map() -> None:
    features = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    weight, bias = torch.randn(3, 8), torch.randn(3)
    fitted_w, fitted_b = ridge_fit(features, features @ weight.T + bias, ridge=1e-8)
    assert torch.allclose(fitted_w, weight, atol=1e-3) and torch.allclose(fitted_b, bias, atol=1e-3)


def test_a_ridge_head_starts_closer_to_its_teacher_than_a_random_one(
    teachers: list[Teacher],
) -> None:
    images = torch.rand(32, 1, 16, 16)
    first_loss = {}
    for init in ("ridge", "random"):
        student = _student()
        heads = TeacherHeads(student.num_features, 1e-3, torch.device("cpu"), init)
        first_loss[init] = cross_distill_step(
            student,
            torch.optim.SGD(student.parameters(), lr=0.0),
            heads,
            teachers,
            images,
            CrossDistillConfig(temperature=1.0),
            torch.Generator().manual_seed(0),
            crop_padding=0,
            flip=False,
        )
    assert first_loss["ridge"] < first_loss["random"]


def test_cross_distillation_fits_every_labelling_teacher_on_the_same_images(
    teachers: list[Teacher],
) -> None:
    student = _student()
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
    heads = TeacherHeads(student.num_features, 1e-2, torch.device("cpu"))
    config = CrossDistillConfig(temperature=2.0)
    images = torch.rand(16, 1, 16, 16)
    rng = torch.Generator().manual_seed(0)

    def total() -> float:
        with torch.no_grad():
            features = student.eval().forward_features(images)
            return sum(
                float(kd_loss(heads.heads[t.teacher_id](features), t.model(images), 2.0))
                for t in teachers
            )

    losses = [
        cross_distill_step(
            student, optimizer, heads, teachers, images, config, rng, crop_padding=0, flip=False
        )
        for _ in range(30)
    ]
    assert len(heads) == len(teachers)
    assert losses[-1] < 0.5 * losses[0]
    assert total() < losses[0] * len(teachers)
    teacher_weights = [p.clone() for t in teachers for p in t.model.parameters()]
    cross_distill_step(
        student, optimizer, heads, teachers, images, config, rng, crop_padding=0, flip=False
    )
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            teacher_weights, [p for t in teachers for p in t.model.parameters()], strict=True
        )
    )  # teachers are never updated


def test_heads_and_their_optimiser_restore_exactly(teachers: list[Teacher]) -> None:
    def run(
        heads: TeacherHeads, student: torch.nn.Module, opt: torch.optim.Optimizer, seed: int
    ) -> None:
        rng = torch.Generator().manual_seed(seed)
        cross_distill_step(
            student,
            opt,
            heads,
            teachers,
            torch.rand(8, 1, 16, 16, generator=rng),
            CrossDistillConfig(),
            rng,
            crop_padding=2,
            flip=False,
        )

    student = _student()
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    heads = TeacherHeads(student.num_features, 1e-3, torch.device("cpu"))
    run(heads, student, opt, 1)
    state = copy.deepcopy(heads.state_dict())  # as a checkpoint would hold it
    restored = TeacherHeads(student.num_features, 1e-3, torch.device("cpu"))
    restored.load_state_dict(state)
    assert list(restored.heads) == state["ids"]
    twin = _student()
    twin.load_state_dict(student.state_dict())
    twin_opt = torch.optim.Adam(twin.parameters(), lr=1e-3)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    run(heads, student, opt, 2)
    run(restored, twin, twin_opt, 2)
    for a, b in zip(heads.heads.values(), restored.heads.values(), strict=True):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_trainer_with_cross_distillation_checkpoints_the_heads_and_resumes(
    teachers: list[Teacher], val_split: ClassImages, tmp_path: Path
) -> None:
    def trainer(config: FreeConfig) -> FreeTrainer:
        return FreeTrainer(
            config,
            InMemoryTeachers(teachers),
            val_data=val_split,
            test_data=None,
            work_dir=tmp_path,
            device="cpu",
        )

    first = trainer(replace(CROSS, iterations=2))
    first.train(progress=False)
    saved = load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    assert saved is not None and len(saved["heads"]["ids"]) == 2
    records = [h for h in first.state.history if h.get("kind") == "iteration"]
    assert [("cross_kd_loss" in h) for h in records] == [False, True]  # none in warm-up
    assert records[1]["cross_kd_loss"] > 0
    again = trainer(CROSS)
    assert list(again.heads.heads) == saved["heads"]["ids"]
    assert again.train(progress=False).iterations_done == CROSS.iterations


@pytest.mark.parametrize(
    "field", [{"steps": 0}, {"batch": 1}, {"teachers": 0}, {"temperature": 0.0}]
)
def test_bad_cross_distillation_settings_are_refused(field: dict[str, float]) -> None:
    from free_common.config import ConfigError

    with pytest.raises(ConfigError, match="cross_kd"):
        CrossDistillConfig(**field)  # type: ignore[arg-type]
