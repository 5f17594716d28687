"""Everything screening measures on one teacher, once, when it arrives."""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from free_common.config import ScreeningConfig
from free_common.free.teachers import Teacher
from free_common.free.trust.probes import teacher_logits
from free_common.free.trust.recovery import Recovery, best_recovery
from free_common.free.trust.triggers import TriggerScan, confirmed_scan

__all__ = [
    "SKETCH_SIZE",
    "Fingerprint",
    "measure_teacher",
    "scan_domain",
    "screening_scan",
    "weight_norm",
    "weight_sketch",
]

SKETCH_SIZE = 1024


@dataclass(frozen=True)
class Fingerprint:
    """One teacher's measurements.

    Attributes:
        teacher_id: the teacher.
        spec: its model spec as JSON (teachers with equal specs are weight-scale peers).
        class_keys: its class keys (shared names or private ``"<id>/<i>"``).
        logits: its logits on the probe images, (probes, classes), float32.
        weight_norm: L2 norm of all its learnable weights (BatchNorm buffers excluded).
        sketch: :func:`weight_sketch` of its weights, (SKETCH_SIZE,), float32.
        recovery: the pixel-space recovery, or None when its logits were out of range.
        seconds: wall time of the measurements.
        trigger: the trigger scan, or None when it was not run (off, or no recovery).
    """

    teacher_id: str
    spec: str
    class_keys: tuple[str, ...]
    logits: Tensor
    weight_norm: float
    sketch: Tensor
    recovery: Recovery | None
    seconds: float
    trigger: TriggerScan | None = None

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
            "sketch": self.sketch,
            "recovery": None if self.recovery is None else vars(self.recovery).copy(),
            "seconds": self.seconds,
            "trigger": None if self.trigger is None else vars(self.trigger).copy(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Fingerprint:
        """Inverse of :meth:`to_state`."""
        recovery = state["recovery"]
        trigger = state.get("trigger")  # absent in checkpoints from before the scan
        return cls(
            teacher_id=str(state["teacher_id"]),
            spec=str(state["spec"]),
            class_keys=tuple(state["class_keys"]),
            logits=state["logits"],
            weight_norm=float(state["weight_norm"]),
            sketch=state["sketch"],
            recovery=None if recovery is None else Recovery(**recovery),
            seconds=float(state["seconds"]),
            trigger=None if trigger is None else _trigger_from_state(trigger),
        )


def weight_norm(teacher: Teacher) -> float:
    """L2 norm over every learnable tensor of the teacher (BatchNorm buffers excluded)."""
    total = sum(float(p.detach().double().pow(2).sum()) for p in teacher.model.parameters())
    return math.sqrt(total)


def weight_sketch(teacher: Teacher, size: int = SKETCH_SIZE) -> Tensor:
    """A unit-norm count sketch of the teacher's weights: (size,), float32.

    Each learnable tensor is centred and scaled to unit norm (so every layer counts alike
    and constant initialisations such as BatchNorm's ones do not look shared), then every
    entry is added, with a random sign, to a random bucket; signs and buckets are seeded
    by the tensor's name and size, so two teachers of one spec use the same ones. The dot
    product of two sketches estimates the cosine similarity of the two weight sets (error
    about ``1/sqrt(size)``): near 1 for a copy with noise, near 0 for models trained from
    different random initialisations.
    """
    total = torch.zeros(size, dtype=torch.float64)
    for name, param in sorted(teacher.model.named_parameters()):
        values = param.detach().double().flatten().cpu()
        values = values - values.mean()
        norm = values.norm()
        if values.numel() < 2 or float(norm) == 0.0:
            continue
        generator = torch.Generator().manual_seed(zlib.crc32(f"{name}:{values.numel()}".encode()))
        buckets = torch.randint(size, (values.numel(),), generator=generator)
        signs = torch.randint(2, (values.numel(),), generator=generator).double() * 2 - 1
        total.index_add_(0, buckets, values * signs / norm)
    length = total.norm()
    return (total / length if float(length) > 0 else total).float()


def measure_teacher(
    teacher: Teacher,
    probes: Tensor,
    config: ScreeningConfig,
    probe_domains: Tensor | None = None,
) -> Fingerprint:
    """Measure ``teacher`` on ``probes`` (N, C, H, W in [0, 1]) as ``config`` says.

    The recovery is skipped when the probe logits are out of ``config.max_logit`` (the
    teacher is excluded for that alone, and inverting an exploding network is pointless).
    With ``probe_domains`` ((N,) domain index of each probe, several domains), the recovery
    is the best of one per domain (:func:`~free_common.free.trust.recovery.best_recovery`).
    The trigger scan (``config.trigger_steps`` > 0) runs after a recovery that passes, on
    the probes of :func:`scan_domain` (all probes for one domain).
    """
    started = time.perf_counter()
    logits = teacher_logits(teacher, probes)
    recovery = None
    if _max_abs(logits) <= config.max_logit:
        recovery = best_recovery(
            teacher,
            probes,
            probe_domains,
            steps=config.steps,
            per_class=config.images_per_class,
            lr=config.recovery_lr,
            passes=lambda r: recovery_passes(r, config),
        )
    trigger = None
    if recovery is not None and recovery_passes(recovery, config) and config.trigger_steps > 0:
        domain = scan_domain(teacher.spec.in_channels, probes, probe_domains, recovery.domain)
        own = probes if domain < 0 or probe_domains is None else probes[probe_domains == domain]
        trigger = (
            None
            if own.shape[0] < 2
            else screening_scan(teacher, own, config)  # it needs a held-out half
        )
    return Fingerprint(
        teacher.teacher_id,
        teacher.spec.to_json(),
        teacher.class_keys,
        logits,
        weight_norm(teacher),
        weight_sketch(teacher),
        recovery,
        time.perf_counter() - started,
        trigger,
    )


def scan_domain(
    channels: int, probes: Tensor, probe_domains: Tensor | None, recovery_domain: int
) -> int:
    """The domain whose probes a teacher's trigger scan runs on: its own, where that is clear.

    An honest network can be pushed to one of its classes by a small patch on images of a
    domain it never saw: in a glyph + icon run an honest icon ResNet-10 recovered best from
    the glyph probes and, scanned on them, was reached from all of them through a patch of
    1.66% (37% on the icon probes). So the scan runs on the one domain whose probes have
    the teacher's native colour: grey (every probe's channels equal) for a one-channel
    teacher, colour for a three-channel one. Where no domain or several match (a grey
    meta-learner, two colour domains), the recovery's domain decides.

    Args:
        channels: the teacher's input channels (its card's).
        probes: probe images (N, C, H, W) in [0, 1].
        probe_domains: (N,) domain index of each probe, or None for one domain.
        recovery_domain: the domain the recovery kept (negative: one domain).

    Returns:
        A domain index, or negative for every probe.
    """
    if probe_domains is None or recovery_domain < 0:
        return recovery_domain
    domains = sorted(set(probe_domains.tolist()))
    matching = [d for d in domains if _is_grey(probes[probe_domains == d]) == (channels == 1)]
    return matching[0] if len(matching) == 1 else recovery_domain


def _is_grey(images: Tensor) -> bool:
    """Whether every image of (N, C, H, W) has equal channels (one channel counts as grey)."""
    return images.shape[1] == 1 or bool((images == images[:, :1]).all())


def screening_scan(teacher: Teacher, probes: Tensor, config: ScreeningConfig) -> TriggerScan:
    """The trigger scan with ``config``'s settings (:func:`confirmed_scan`).

    Args:
        teacher: the model under test.
        probes: probe images (N, C, H, W) in [0, 1], N >= 2.
        config: its ``trigger_*`` fields and ``min_trigger_flip`` / ``min_trigger_patch``.
    """
    return confirmed_scan(
        teacher,
        probes,
        confirmations=config.trigger_confirmations,
        limit=config.min_trigger_patch,
        min_flip=config.min_trigger_flip,
        steps=config.trigger_steps,
        batch=config.trigger_batch,
        lr=config.trigger_lr,
        mask_weight=config.trigger_mask_weight,
        refine_steps=config.trigger_refine_steps,
        refine_below=config.trigger_refine_below,
    )


def _max_abs(logits: Tensor) -> float:
    """Largest |logit| (inf when any is not finite)."""
    if not bool(torch.isfinite(logits).all()):
        return math.inf
    return float(logits.abs().max()) if logits.numel() else 0.0


def recovery_passes(recovery: Recovery, config: ScreeningConfig) -> bool:
    """Whether a recovery meets ``config``'s accuracy and confidence limits."""
    return recovery.accuracy >= config.min_accuracy and recovery.confidence >= config.min_confidence


def _trigger_from_state(state: dict[str, Any]) -> TriggerScan:
    return TriggerScan(
        tuple(float(v) for v in state["mask_shares"]),
        tuple(float(v) for v in state["flip_rates"]),
        float(state["seconds"]),
        tuple(float(v) for v in state["concentrations"]),
        tuple(int(k) for k in state.get("refined", ())),  # absent: stored before refinement
        int(state.get("scans", 1)),  # absent: stored before confirmations
    )
