"""Hidden units compared whatever their order (``free_common.free.trust.representations``)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from free_common.config import FreeConfig, ScreeningConfig
from free_common.free.trust.representations import GRID, unit_features, unit_match
from tests.unit.free.synthetic import random_teacher, tiny_spec


def test_features_cover_every_convolution_and_every_probe_batch() -> None:
    """300 probes run in three batches; each layer's rows join them in probe order."""
    teacher = random_teacher("t", tiny_spec(3, width=4))
    probes = torch.rand(300, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    features = unit_features(teacher, probes)
    assert [f.shape for f in features] == [(300 * GRID * GRID, 4)] * 4
    first = unit_features(teacher, probes[:100])[0]  # one batch alone, standardised alone
    head = features[0][: 100 * GRID * GRID]
    assert np.corrcoef(first[:, 0], head[:, 0])[0, 1] > 0.999
    assert unit_match(features, features) == pytest.approx(1.0)


def test_independent_models_match_less_and_other_architectures_are_refused() -> None:
    probes = torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    a = unit_features(random_teacher("a", tiny_spec(3, width=8), seed=0), probes)
    b = unit_features(random_teacher("b", tiny_spec(3, width=8), seed=1), probes)
    assert unit_match(a, b) < 0.85
    other = unit_features(random_teacher("c", tiny_spec(3, width=4)), probes)
    with pytest.raises(ValueError, match="different architectures"):
        unit_match(a, other)


def test_the_unit_limit_leaves_configuration_keys_as_they_were_at_its_first_value() -> None:
    config = FreeConfig.preset("xkd-cpu")
    assert "max_unit_correlation" not in config.to_dict()["screening"]
    moved = replace(config, screening=ScreeningConfig(max_unit_correlation=0.9))
    assert moved.to_dict()["screening"]["max_unit_correlation"] == 0.9
    assert FreeConfig.from_dict(config.to_dict()) == config
    assert FreeConfig.from_dict(moved.to_dict()) == moved
