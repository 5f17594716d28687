"""Screening of one teacher: structural checks, then the trust measurements and their verdict.

Weights that are NaN/Inf, or a head wider than the meta-learner's, are rejected without
running the teacher. Otherwise the teacher is measured once on probe images
(:func:`free_common.free.trust.fingerprint.measure_teacher`: pixel-space recovery of each
class, outputs, weight norm) and judged alone
(:func:`free_common.free.trust.checks.teacher_findings`). The checks against the rest of
the pool run in ``server/trust.py``. Thresholds: ``server/README.md``, "Trusting the pool".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from free_common.config import ScreeningConfig
from free_common.free.teachers import Teacher
from free_common.free.trust.checks import Finding, teacher_findings
from free_common.free.trust.fingerprint import Fingerprint, measure_teacher

__all__ = ["ScreeningResult", "screen_teacher"]


@dataclass(frozen=True)
class ScreeningResult:
    """Verdict on one teacher, alone.

    Attributes:
        teacher_id: the teacher.
        accepted: whether it passed every check of one teacher.
        accuracy: its accuracy on its recovered images (nan if not recovered).
        confidence: its mean max-softmax on them (nan if not recovered).
        reason: why it was rejected ("" when accepted).
        findings: every check it failed.
        fingerprint: its measurements (None when rejected before measuring).
    """

    teacher_id: str
    accepted: bool
    accuracy: float
    confidence: float
    reason: str
    findings: tuple[Finding, ...] = ()
    fingerprint: Fingerprint | None = None


def _structural_problem(teacher: Teacher, max_classes: int) -> str:
    if teacher.num_classes > max_classes:
        return f"{teacher.num_classes} classes exceed the meta-learner's {max_classes} outputs"
    for name, tensor in teacher.model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            return f"non-finite weights in {name}"
    return ""


def screen_teacher(
    teacher: Teacher,
    config: ScreeningConfig,
    probes: Tensor,
    *,
    max_classes: int,
    probe_domains: Tensor | None = None,
) -> ScreeningResult:
    """Measure ``teacher`` on ``probes`` and judge it alone.

    Args:
        teacher: the candidate.
        config: what to measure and the thresholds.
        probes: probe images (N, C, H, W) in [0, 1], the same for every teacher of a pool.
        max_classes: the meta-learner's head size.
        probe_domains: (N,) domain index of each probe when they come from several
            domains (``free_common.free.trust.probes.probe_domains``), else None.

    Raises:
        NonFiniteLossError: the teacher's recovery loss became NaN/Inf.
    """
    nan = float("nan")
    problem = _structural_problem(teacher, max_classes)
    if problem:
        return ScreeningResult(teacher.teacher_id, False, nan, nan, problem)
    fp = measure_teacher(teacher, probes, config, probe_domains)
    findings = tuple(teacher_findings(fp, config, probe_domains))
    accuracy = fp.recovery.accuracy if fp.recovery is not None else nan
    confidence = fp.recovery.confidence if fp.recovery is not None else nan
    excluding = [f.reason for f in findings if f.exclude]
    return ScreeningResult(
        teacher.teacher_id,
        not excluding,
        accuracy,
        confidence,
        excluding[0] if excluding else "",
        findings,
        fp,
    )
