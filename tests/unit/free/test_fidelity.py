"""Recovery fidelity: a student distilled on recovered images, scored on real held-out ones."""

from __future__ import annotations

import pytest
import torch

from free_common.free.fidelity import (
    FidelityError,
    FidelitySettings,
    distill_student,
    recovery_fidelity,
)
from free_common.free.teachers import Teacher
from tests.unit.free.synthetic import class_images, tiny_spec, trained_teacher

FAST = FidelitySettings(steps=60, lr=1e-2, batch_size=32, padding=1)


@pytest.fixture(scope="module")
def setup() -> tuple[Teacher, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 3-class teacher, 4 real training images per class and 10 held-out per class."""
    data = class_images(3, 14, size=16, seed=3)
    teacher = trained_teacher("t", data, [0, 1, 2], spec=tiny_spec(3, width=8), epochs=10)
    images = torch.from_numpy(data.images).float().div(255.0)
    labels = torch.from_numpy(data.labels)
    few = torch.cat([images[labels == c][:4] for c in range(3)])
    held = torch.cat([images[labels == c][4:] for c in range(3)])
    held_labels = torch.cat([labels[labels == c][4:] for c in range(3)])
    return teacher, few, held, held_labels


def test_real_images_transfer_the_task_and_blank_images_do_not(
    setup: tuple[Teacher, torch.Tensor, torch.Tensor, torch.Tensor],
) -> None:
    teacher, few, held, held_labels = setup
    real = recovery_fidelity(teacher, few, held, held_labels, FAST, seed=0)
    blank = recovery_fidelity(teacher, torch.full_like(few, 0.5), held, held_labels, FAST, seed=0)
    assert real >= 0.8
    assert blank <= 0.5
    assert real > blank + 0.3


def test_deterministic_for_a_seed_and_leaves_the_global_rng_alone(
    setup: tuple[Teacher, torch.Tensor, torch.Tensor, torch.Tensor],
) -> None:
    teacher, few, held, held_labels = setup
    state = torch.get_rng_state()
    a = recovery_fidelity(teacher, few, held, held_labels, FAST, seed=4)
    b = recovery_fidelity(teacher, few, held, held_labels, FAST, seed=4)
    assert a == b
    assert torch.equal(torch.get_rng_state(), state)


def test_student_takes_the_teachers_input_from_other_sizes_and_channels(
    setup: tuple[Teacher, torch.Tensor, torch.Tensor, torch.Tensor],
) -> None:
    teacher, few, held, held_labels = setup
    rgb_large = torch.nn.functional.interpolate(few, size=32).expand(-1, 3, -1, -1)
    student = distill_student(teacher, rgb_large, FidelitySettings(steps=2), seed=0)
    assert not student.training
    assert student(held[:2]).shape == (2, 3)
    assert 0.0 <= recovery_fidelity(teacher, rgb_large, held, held_labels, FAST) <= 1.0


def test_the_teacher_is_left_frozen(
    setup: tuple[Teacher, torch.Tensor, torch.Tensor, torch.Tensor],
) -> None:
    teacher, few, held, held_labels = setup
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    recovery_fidelity(teacher, few, held, held_labels, FidelitySettings(steps=3))
    after = teacher.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not teacher.model.training


@pytest.mark.parametrize(
    ("images", "held", "labels", "match"),
    [
        (torch.zeros(0, 1, 16, 16), torch.zeros(3, 1, 16, 16), torch.zeros(3).long(), "non-empty"),
        (torch.zeros(3, 1, 16, 16), torch.zeros(0, 1, 16, 16), torch.zeros(0).long(), "held-out"),
        (torch.zeros(3, 1, 16, 16), torch.zeros(3, 1, 16, 16), torch.zeros(2).long(), "labels"),
        (torch.zeros(3, 1, 16, 16), torch.zeros(3, 1, 16, 16), torch.tensor([0, 1, 3]), "0..2"),
        (torch.zeros(3, 1, 16, 16), torch.zeros(3, 1, 16, 16), torch.tensor([0, -1, 2]), "0..2"),
    ],
)
def test_bad_inputs_are_refused(
    setup: tuple[Teacher, torch.Tensor, torch.Tensor, torch.Tensor],
    images: torch.Tensor,
    held: torch.Tensor,
    labels: torch.Tensor,
    match: str,
) -> None:
    with pytest.raises(FidelityError, match=match):
        recovery_fidelity(setup[0], images, held, labels, FidelitySettings(steps=1))


@pytest.mark.parametrize(
    "kwargs",
    [{"steps": 0}, {"batch_size": 0}, {"padding": -1}, {"lr": 0.0}, {"temperature": -1.0}],
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(FidelityError):
        FidelitySettings(**kwargs)  # type: ignore[arg-type]
