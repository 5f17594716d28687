"""Random, Average, FREE variants and the scratch inverter of ``server.baselines``."""

from __future__ import annotations

import pytest
import torch

from free_common.config import FreeConfig
from free_common.free.teachers import Teacher, teacher_from_state_dict
from free_common.models import ModelSpec, build_model
from server.baselines import (
    BaselineError,
    ScratchInverter,
    average_teachers,
    random_initialisation,
    variant_config,
)

SPEC = ModelSpec("conv4", image_size=16, width=4)


def _teacher(name: str, spec: ModelSpec, seed: int) -> Teacher:
    torch.manual_seed(seed)
    return teacher_from_state_dict(name, spec, build_model(spec).state_dict())


def test_random_initialisation_is_seeded_and_leaves_global_rng() -> None:
    before = torch.get_rng_state()
    a, b = random_initialisation(SPEC, 3), random_initialisation(SPEC, 3)
    assert torch.equal(torch.get_rng_state(), before)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    c = random_initialisation(SPEC, 4)
    first = next(iter(dict(a.named_parameters())))
    assert not torch.equal(dict(a.named_parameters())[first], dict(c.named_parameters())[first])


def test_average_is_the_elementwise_mean_of_matching_teachers() -> None:
    t1, t2 = _teacher("a", SPEC, 1), _teacher("b", SPEC, 2)
    other = _teacher("c", ModelSpec("conv4", image_size=16, width=8), 3)
    model, count = average_teachers([t1, other, t2], SPEC)
    assert count == 2
    for name, value in model.state_dict().items():
        expected = (t1.model.state_dict()[name] + t2.model.state_dict()[name]) / 2
        torch.testing.assert_close(value, expected)


def test_average_without_matching_teacher_raises() -> None:
    with pytest.raises(BaselineError, match="no teacher"):
        average_teachers([_teacher("a", SPEC, 1)], ModelSpec("conv4", image_size=16, width=8))


def test_variant_config_switches() -> None:
    base = FreeConfig.preset("test")
    assert variant_config(base, "free") == base
    assert variant_config(base, "scratch") == base
    assert variant_config(base, "no_alignment").meta_learner.alignment is False
    assert variant_config(base, "hard_labels").meta_learner.hard_labels is True
    with pytest.raises(BaselineError, match="unknown variant"):
        variant_config(base, "nope")


def test_scratch_inverter_runs_scratch_steps_and_keeps_the_generator() -> None:
    config = FreeConfig.preset("test").inversion
    inverter = ScratchInverter(config, torch.device("cpu"))
    before = {k: v.clone() for k, v in inverter.generator.state_dict().items()}
    teacher = _teacher("a", ModelSpec("conv4", image_size=16, width=4), 1)
    out = inverter.invert([teacher, teacher], torch.Generator().manual_seed(0))
    assert [r.steps for r in out] == [config.scratch_steps] * 2
    assert out[0].images.shape == (5 * config.images_per_class, 1, 16, 16)
    for name, value in inverter.generator.state_dict().items():
        assert torch.equal(value, before[name]), name
