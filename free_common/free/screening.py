"""Teacher screening: reject submissions that cannot be inverted.

A teacher with random or corrupted weights never produces confident predictions for a
class, so inverting it fails: its accuracy on its own recovered images stays near chance
or its confidence stays low (FREE's inversion, paper Eq. 1, needs a teacher that
separates its classes). Each new teacher gets one short from-scratch screening inversion
(:func:`~free_common.free.scratch_inversion.invert_from_scratch`); it is excluded, with a
recorded reason, when the recovery quality is below the configured thresholds. Weights
that are NaN/Inf, or a head wider than the meta-learner's, are rejected without
inverting. Thresholds: README section "Teacher screening" (measured).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from free_common.config import InversionConfig, ScreeningConfig
from free_common.free.scratch_inversion import invert_from_scratch
from free_common.free.teachers import Teacher

__all__ = ["ScreeningResult", "screen_teacher"]


@dataclass(frozen=True)
class ScreeningResult:
    """Verdict on one teacher.

    Attributes:
        teacher_id: the teacher.
        accepted: whether it may be sampled.
        accuracy: its accuracy on its screening-recovered images (nan if not inverted).
        confidence: its mean max-softmax on them (nan if not inverted).
        reason: why it was rejected ("" when accepted).
    """

    teacher_id: str
    accepted: bool
    accuracy: float
    confidence: float
    reason: str


def _structural_problem(teacher: Teacher, max_classes: int) -> str:
    if teacher.num_classes > max_classes:
        return f"{teacher.num_classes} classes exceed the meta-learner's {max_classes} outputs"
    for name, tensor in teacher.model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            return f"non-finite weights in {name}"
    return ""


def screen_teacher(
    teacher: Teacher,
    inversion: InversionConfig,
    config: ScreeningConfig,
    rng: torch.Generator,
    *,
    max_classes: int,
) -> ScreeningResult:
    """Invert ``teacher`` briefly from scratch and judge its recovery quality.

    Args:
        teacher: the candidate.
        inversion: generator and loss settings (the adversarial term is not used).
        config: screening steps, images and thresholds.
        rng: CPU generator for the screening inversion.
        max_classes: the meta-learner's head size.
    """
    problem = _structural_problem(teacher, max_classes)
    if problem:
        return ScreeningResult(teacher.teacher_id, False, float("nan"), float("nan"), problem)
    result = invert_from_scratch(
        teacher, inversion, rng, steps=config.steps, images_per_class=config.images_per_class
    )
    acc, conf = result.recovered.accuracy, result.recovered.confidence
    reasons = []
    if not acc >= config.min_accuracy:
        reasons.append(f"recovery accuracy {acc:.3f} < {config.min_accuracy}")
    if not conf >= config.min_confidence:
        reasons.append(f"recovery confidence {conf:.3f} < {config.min_confidence}")
    reason = "; ".join(reasons)
    return ScreeningResult(teacher.teacher_id, not reasons, acc, conf, reason)
