from dataclasses import replace

import pytest
import torch

from free_common.config import FreeConfig
from free_common.data.base import ClassImages
from free_common.free.scratch_inversion import fresh_generator, invert_from_scratch
from free_common.free.screening import screen_teacher
from free_common.free.teachers import Teacher
from free_common.free.trust.probes import probe_images
from tests.unit.free.synthetic import random_teacher, tiny_spec

INV = FreeConfig.preset("test").inversion
SCREEN = FreeConfig.preset("test").screening


def test_runs_the_requested_steps(teachers: list[Teacher]) -> None:
    out = invert_from_scratch(teachers[0], INV, torch.Generator().manual_seed(0), steps=4)
    assert out.steps == 4 and out.reached and out.seconds > 0
    assert out.recovered.images.shape == (3 * INV.images_per_class, 1, 16, 16)


def test_stops_when_target_quality_is_reached(teachers: list[Teacher]) -> None:
    easy = invert_from_scratch(
        teachers[0], INV, torch.Generator(), steps=50, target_accuracy=0.0, check_every=2
    )
    assert easy.steps == 2 and easy.reached
    hard = invert_from_scratch(
        teachers[0], INV, torch.Generator(), steps=3, target_accuracy=1.01, check_every=1
    )
    assert hard.steps == 3 and not hard.reached


def test_fresh_generators_differ_and_leave_global_rng_alone() -> None:
    rng = torch.Generator().manual_seed(0)
    state = torch.get_rng_state()
    a, b = fresh_generator(INV, rng), fresh_generator(INV, rng)
    assert torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(a.fc.weight, b.fc.weight)


def test_more_steps_recover_better(teachers: list[Teacher]) -> None:
    inv = replace(INV, generator_width=8, generator_lr=1e-2, latent_lr=1e-2, crop_padding=0)
    short = invert_from_scratch(teachers[0], inv, torch.Generator().manual_seed(1), steps=1)
    long = invert_from_scratch(teachers[0], inv, torch.Generator().manual_seed(1), steps=40)
    assert long.recovered.loss < short.recovered.loss
    assert long.recovered.accuracy >= short.recovered.accuracy


def test_screening_verdicts(teachers: list[Teacher], val_split: ClassImages) -> None:
    probes = probe_images(val_split, 16)
    cfg = replace(SCREEN, min_accuracy=0.0, min_confidence=0.0)
    ok = screen_teacher(teachers[0], cfg, probes, max_classes=5)
    assert ok.accepted and ok.reason == "" and 0 <= ok.accuracy <= 1
    assert ok.fingerprint is not None and ok.findings == ()
    picky = replace(cfg, min_confidence=1.0)
    rejected = screen_teacher(teachers[0], picky, probes, max_classes=5)
    assert not rejected.accepted and "confidence" in rejected.reason
    assert [f.check for f in rejected.findings] == ["recovery"]
    wide = screen_teacher(random_teacher("w", tiny_spec(6)), cfg, probes, max_classes=5)
    assert not wide.accepted and "exceed" in wide.reason and wide.fingerprint is None


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_rejected_without_measuring(
    value: float, val_split: ClassImages
) -> None:
    teacher = random_teacher("bad", tiny_spec(3))
    next(teacher.model.parameters()).data.view(-1)[0] = value
    verdict = screen_teacher(teacher, SCREEN, probe_images(val_split, 4), max_classes=5)
    assert not verdict.accepted and "non-finite" in verdict.reason
    assert verdict.fingerprint is None
