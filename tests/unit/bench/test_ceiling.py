"""The real-data ceiling: trained over every meta-train class, returned as a meta-learner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from free_common.data.base import ClassImages
from free_common.models import ModelSpec
from scripts.bench.ceiling import CeilingSettings, pretrain_ceiling

SPEC = ModelSpec("conv4", in_channels=1, image_size=16, num_classes=5, width=4)


def _classes(k: int, per: int, side: int = 16, channels: int = 1) -> ClassImages:
    """``k`` classes told apart by which horizontal band is bright, ``per`` images each."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 40, size=(k * per, channels, side, side)).astype(np.uint8)
    labels = np.repeat(np.arange(k), per)
    band = side // k
    for row, label in enumerate(labels):
        images[row, :, label * band : (label + 1) * band] = 255
    return ClassImages("bands/train", images, labels, tuple(f"c{i}" for i in range(k)))


def test_the_ceiling_learns_every_class_and_uses_batch_statistics() -> None:
    torch.manual_seed(0)
    model, info = pretrain_ceiling(_classes(4, 20), SPEC, 0, CeilingSettings(epochs=15, lr=1e-2))
    assert model.spec.num_classes == 4 and info["classes"] == 4
    assert info["holdout_accuracy"] > 0.6  # 4 classes: chance is 0.25
    assert not model.training
    assert not any("running" in k for k in model.state_dict())  # batch statistics, as Average
    assert model(torch.zeros(3, 1, 16, 16)).shape == (3, 4)


def test_an_input_other_than_the_learners_is_refused() -> None:
    with pytest.raises(ValueError, match=r"meta-train images are \(3, 16, 16\)"):
        pretrain_ceiling(_classes(4, 6, channels=3), SPEC, 0, CeilingSettings(epochs=1))
