"""Everything screening measures on one teacher, once, when it arrives."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from free_common.config import ScreeningConfig
from free_common.free.teachers import Teacher
from free_common.free.trust.probes import teacher_logits
from free_common.free.trust.recovery import Recovery, recover_from_probes

__all__ = ["Fingerprint", "measure_teacher", "weight_norm"]


@dataclass(frozen=True)
class Fingerprint:
    """One teacher's measurements.

    Attributes:
        teacher_id: the teacher.
        spec: its model spec as JSON (teachers with equal specs are weight-scale peers).
        class_keys: its class keys (shared names or private ``"<id>/<i>"``).
        logits: its logits on the probe images, (probes, classes), float32.
        weight_norm: L2 norm of all its learnable weights (BatchNorm buffers excluded).
        recovery: the pixel-space recovery, or None when its logits were out of range.
        seconds: wall time of the measurements.
    """

    teacher_id: str
    spec: str
    class_keys: tuple[str, ...]
    logits: Tensor
    weight_norm: float
    recovery: Recovery | None
    seconds: float

    @property
    def max_abs_logit(self) -> float:
        """Largest |logit| on the probes (inf when any is not finite)."""
        return _max_abs(self.logits)

    def to_state(self) -> dict[str, Any]:
        """A checkpointable dict (tensors and plain values)."""
        return {
            "teacher_id": self.teacher_id,
            "spec": self.spec,
            "class_keys": list(self.class_keys),
            "logits": self.logits,
            "weight_norm": self.weight_norm,
            "recovery": None if self.recovery is None else vars(self.recovery).copy(),
            "seconds": self.seconds,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Fingerprint:
        """Inverse of :meth:`to_state`."""
        recovery = state["recovery"]
        return cls(
            teacher_id=str(state["teacher_id"]),
            spec=str(state["spec"]),
            class_keys=tuple(state["class_keys"]),
            logits=state["logits"],
            weight_norm=float(state["weight_norm"]),
            recovery=None if recovery is None else Recovery(**recovery),
            seconds=float(state["seconds"]),
        )


def weight_norm(teacher: Teacher) -> float:
    """L2 norm over every learnable tensor of the teacher (BatchNorm buffers excluded)."""
    total = sum(float(p.detach().double().pow(2).sum()) for p in teacher.model.parameters())
    return math.sqrt(total)


def measure_teacher(teacher: Teacher, probes: Tensor, config: ScreeningConfig) -> Fingerprint:
    """Measure ``teacher`` on ``probes`` (N, C, H, W in [0, 1]) as ``config`` says.

    The recovery is skipped when the probe logits are out of ``config.max_logit`` (the
    teacher is excluded for that alone, and inverting an exploding network is pointless).
    """
    started = time.perf_counter()
    logits = teacher_logits(teacher, probes)
    recovery = None
    if _max_abs(logits) <= config.max_logit:
        recovery = recover_from_probes(
            teacher,
            probes,
            steps=config.steps,
            per_class=config.images_per_class,
            lr=config.recovery_lr,
        )
    return Fingerprint(
        teacher.teacher_id,
        teacher.spec.to_json(),
        teacher.class_keys,
        logits,
        weight_norm(teacher),
        recovery,
        time.perf_counter() - started,
    )


def _max_abs(logits: Tensor) -> float:
    """Largest |logit| (inf when any is not finite)."""
    if not bool(torch.isfinite(logits).all()):
        return math.inf
    return float(logits.abs().max()) if logits.numel() else 0.0
