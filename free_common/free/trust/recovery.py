"""Pixel-space recovery: can each of a teacher's classes be reached, confidently?

FREE's inversion (paper Eq. 1) needs a teacher that separates its classes. Screening asks
it directly of the images: starting from probe images, a few Adam steps on the pixels
(through a sigmoid, so they stay in [0, 1]) minimise the teacher's cross-entropy for each
class. A trained classifier of any depth gets there in a handful of steps; a random or
shuffled network does not give confident outputs however its input moves. No generator
is involved, so the test does not depend on how fast a small generator can satisfy a deep
network (the old screening criterion, which excluded honest ResNets).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from free_common.free.augment import to_model_input
from free_common.free.errors import check_finite
from free_common.free.teachers import Teacher
from free_common.free.trust.probes import TrustError

__all__ = ["Recovery", "best_recovery", "recover_from_probes"]

_EDGE = 0.02  # probe pixels are clamped to [EDGE, 1 - EDGE] before the inverse sigmoid


@dataclass(frozen=True)
class Recovery:
    """Outcome of :func:`recover_from_probes`.

    Attributes:
        accuracy: share of the recovered images the teacher gives their target class.
        confidence: the teacher's mean max-softmax probability on them.
        seconds: wall time.
        domain: the probe domain it started from when the probes span several domains and
            only the best domain's recovery is kept (:func:`best_recovery`); -1 otherwise.
    """

    accuracy: float
    confidence: float
    seconds: float
    domain: int = -1


def recover_from_probes(
    teacher: Teacher, probes: Tensor, *, steps: int, per_class: int, lr: float
) -> Recovery:
    """Push ``per_class`` probe images towards each class for ``steps`` Adam steps.

    Args:
        teacher: the model under test (frozen; its device is used).
        probes: starting images (N, C, H, W) in [0, 1]; reused cyclically when N is
            smaller than ``classes * per_class``.
        steps: Adam steps on the pixel logits.
        per_class: images per class.
        lr: Adam learning rate on the pixel logits.

    Raises:
        TrustError: ``steps``, ``per_class`` or ``lr`` out of range, or no probe.
        NonFiniteLossError: the teacher's loss became NaN/Inf.
    """
    if steps < 1 or per_class < 1 or not lr > 0 or probes.shape[0] == 0:
        raise TrustError(
            f"recovery needs steps, per_class, lr and probes > 0: {steps}, "
            f"{per_class}, {lr}, {probes.shape[0]}"
        )
    started = time.perf_counter()
    device = next(teacher.model.parameters()).device
    spec = teacher.spec
    targets = torch.arange(spec.num_classes, device=device).repeat_interleave(per_class)
    rows = torch.arange(targets.shape[0]) % probes.shape[0]
    start = probes[rows].to(device).clamp(_EDGE, 1 - _EDGE)
    pixels = torch.logit(start).requires_grad_(True)
    optimizer = torch.optim.Adam([pixels], lr=lr, betas=(0.5, 0.999))
    for _ in range(steps):
        logits = teacher.model(
            to_model_input(torch.sigmoid(pixels), spec.image_size, spec.in_channels)
        )
        loss = F.cross_entropy(logits, targets)
        check_finite(loss, "screening/recovery")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    with torch.no_grad():
        images = to_model_input(torch.sigmoid(pixels), spec.image_size, spec.in_channels)
        probs = teacher.model(images).float().softmax(dim=1)
    accuracy = float((probs.argmax(dim=1) == targets).float().mean())
    confidence = float(probs.max(dim=1).values.mean())
    return Recovery(accuracy, confidence, time.perf_counter() - started)


def best_recovery(
    teacher: Teacher,
    probes: Tensor,
    probe_domains: Tensor | None,
    *,
    steps: int,
    per_class: int,
    lr: float,
    passes: Callable[[Recovery], bool],
) -> Recovery:
    """:func:`recover_from_probes` from each probe domain's images; the best is kept.

    A pool that mixes domains (grey glyphs and RGB icons) has probes of both, and an honest
    teacher of one domain is pushed to its classes less easily from the other domain's
    images: in a glyphs+icons run, an honest icon Conv4 started from probes that were 83%
    glyphs reached a mean confidence under the limit. Each teacher is therefore judged
    from the probes of the domain where it recovers best, the first that ``passes``, else
    the most confident; a random or shuffled network is confident from none. ``seconds``
    is the time of all of them.

    Args:
        teacher: the model under test (frozen).
        probes: starting images (N, C, H, W) in [0, 1].
        probe_domains: (N,) domain index of each probe, or None for one domain (one
            recovery from every probe, the single-domain behaviour).
        steps: Adam steps of each recovery.
        per_class: images per class of each recovery.
        lr: Adam learning rate on the pixel logits.
        passes: whether a recovery meets the screening thresholds.
    """
    domains = sorted(set(probe_domains.tolist())) if probe_domains is not None else []
    if probe_domains is None or len(domains) < 2:
        return recover_from_probes(teacher, probes, steps=steps, per_class=per_class, lr=lr)
    tried = [
        replace(
            recover_from_probes(
                teacher, probes[probe_domains == d], steps=steps, per_class=per_class, lr=lr
            ),
            domain=int(d),
        )
        for d in domains
    ]
    best = max(tried, key=lambda r: (passes(r), r.confidence, r.accuracy))
    return replace(best, seconds=sum(r.seconds for r in tried))
