"""Probe images and a teacher's outputs on them.

The probes are images the server already holds: a fixed, seeded draw from its meta-val
split (classes no owner trains on). Every teacher sees the same probes, so their outputs
can be compared with each other without aligning weights.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from free_common.data.base import ClassImages
from free_common.free.augment import to_model_input
from free_common.free.teachers import Teacher

__all__ = ["TrustError", "probe_domains", "probe_images", "teacher_logits"]

_BATCH = 128


class TrustError(ValueError):
    """Bad trust settings or inputs (no probe images, a teacher without outputs)."""


def probe_images(data: ClassImages, count: int, *, seed: int = 0) -> Tensor:
    """``count`` images of ``data`` drawn without replacement (all when fewer), in [0, 1].

    Returns:
        Float tensor (count, C, H, W) on the CPU, rows in the split's order.

    Raises:
        TrustError: ``data`` holds no image or ``count < 1``.
    """
    rows = _probe_rows(data, count, seed)
    return torch.from_numpy(data.images[rows]).float().div(255.0)


def probe_domains(data: ClassImages, count: int, *, seed: int = 0) -> Tensor | None:
    """The domain index of each of :func:`probe_images`'s probes (same arguments, same rows).

    Returns:
        (count,) int64 on the CPU, indices into the sorted domains of ``data``; None when
        ``data`` holds one domain.
    """
    names = sorted(set(data.domains))
    if len(names) < 2:
        return None
    rows = _probe_rows(data, count, seed)
    index = np.array([names.index(data.domains[c]) for c in data.labels[rows]], dtype=np.int64)
    return torch.from_numpy(index)


def _probe_rows(data: ClassImages, count: int, seed: int) -> np.ndarray:
    if count < 1 or len(data.labels) == 0:
        raise TrustError(f"need at least one probe image: {count} asked, {len(data.labels)} held")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(len(data.labels), min(count, len(data.labels)), replace=False))


def teacher_logits(teacher: Teacher, images: Tensor) -> Tensor:
    """The teacher's logits on ``images`` (N, C, H, W in [0, 1]): (N, classes), float32, CPU."""
    spec = teacher.spec
    device = next(teacher.model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, images.shape[0], _BATCH):
            batch = images[start : start + _BATCH].to(device)
            logits = teacher.model(to_model_input(batch, spec.image_size, spec.in_channels))
            out.append(logits.float().cpu())
    return torch.cat(out)
