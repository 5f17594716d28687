"""Shared tiny data and teachers for the FREE unit tests (trained once per session)."""

from __future__ import annotations

import pytest
import torch

from free_common.data.base import ClassImages
from free_common.free.teachers import Teacher
from tests.unit.free.synthetic import class_images, tiny_spec, trained_teacher


@pytest.fixture(scope="session")
def train_split() -> ClassImages:
    return class_images(9, 20, seed=0)


@pytest.fixture(scope="session")
def val_split() -> ClassImages:
    return class_images(6, 10, seed=1, name="val")


@pytest.fixture(scope="session")
def test_split() -> ClassImages:
    return class_images(6, 10, seed=2, name="test")


@pytest.fixture(scope="session")
def teachers(train_split: ClassImages) -> list[Teacher]:
    """Three 3-way Conv4 teachers (width 8, 16x16) on disjoint classes."""
    torch.set_num_threads(1)
    return [
        trained_teacher(f"t{i}", train_split, c, seed=i, epochs=12, spec=tiny_spec(3, width=8))
        for i, c in enumerate([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    ]
