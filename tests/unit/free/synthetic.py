"""Synthetic class images and tiny trained teachers for the FREE tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from client.local_training import train_local_classifier
from free_common.config import FreeConfig
from free_common.data.base import ClassImages
from free_common.free.teachers import InMemoryTeachers, Teacher, teacher_from_state_dict
from free_common.models import ModelSpec
from server.free_training import FreeTrainer


def class_images(
    num_classes: int,
    per_class: int,
    *,
    size: int = 16,
    channels: int = 1,
    seed: int = 0,
    name: str = "synthetic",
) -> ClassImages:
    """Each class is a random smooth prototype; images are the prototype + noise, uint8."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((num_classes, channels, 4, 4))
    protos = np.kron(coarse, np.ones((1, 1, size // 4, size // 4)))  # (K, C, S, S)
    noise = rng.normal(0, 0.08, (num_classes, per_class, channels, size, size))
    pixels = np.clip(protos[:, None] + noise, 0, 1).reshape(-1, channels, size, size)
    labels = np.repeat(np.arange(num_classes, dtype=np.int64), per_class)
    return ClassImages(
        name,
        (pixels * 255).round().astype(np.uint8),
        labels,
        tuple(f"c{i}" for i in range(num_classes)),
    )


def tiny_spec(
    num_classes: int = 3, *, arch: str = "conv4", width: int = 4, size: int = 16, channels: int = 1
) -> ModelSpec:
    return ModelSpec(
        arch=arch,
        in_channels=channels,
        image_size=size,
        num_classes=num_classes,
        width=width,
        mean=(0.5,) * channels,
        std=(0.5,) * channels,
    )


def trained_teacher(
    teacher_id: str,
    data: ClassImages,
    classes: list[int],
    *,
    spec: ModelSpec | None = None,
    epochs: int = 15,
    seed: int = 0,
    shared_keys: bool = False,
) -> Teacher:
    """A teacher trained on ``classes`` of ``data`` (keys: shared class names if asked)."""
    subset = data.subset(classes)
    spec = spec or tiny_spec(len(classes), size=data.image_shape[1], channels=data.image_shape[0])
    result = train_local_classifier(subset, spec, epochs=epochs, seed=seed, device="cpu")
    keys = tuple(data.class_names[c] for c in classes) if shared_keys else None
    return teacher_from_state_dict(teacher_id, spec, result.state_dict, keys)


def random_teacher(teacher_id: str, spec: ModelSpec, seed: int = 0) -> Teacher:
    """A teacher with freshly initialised (untrained) weights."""
    from free_common.models import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(spec)
    return teacher_from_state_dict(teacher_id, spec, model.state_dict())


def cpu_trainer(
    teachers: list[Teacher], val: ClassImages, work: Path, config: FreeConfig
) -> FreeTrainer:
    """A FREE trainer on ``teachers`` with ``val`` as meta-val, no meta-test, on the CPU."""
    return FreeTrainer(
        config,
        InMemoryTeachers(teachers),
        val_data=val,
        test_data=None,
        work_dir=work,
        device="cpu",
    )
