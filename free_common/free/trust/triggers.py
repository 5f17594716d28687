"""Trigger scan: is one of a teacher's classes reachable from any image through a tiny patch?

A backdoored model answers its target class whenever a small trigger is stamped on an
image and behaves normally otherwise, so its outputs on clean probes, its recovery and
its agreement with peers all look honest. Neural Cleanse (Wang et al., IEEE S&P 2019)
reverse-engineers such a trigger: for each class, the smallest mask (with a free pattern
under it) that sends most inputs to that class. For an honest class that mask has to
draw a good part of the class; for a backdoor target, the implanted trigger is a shortcut
a few pixels wide.

No data is needed beyond the probe images screening already uses: the mask and pattern
are optimised on them (images of other classes than the teacher's, which is what a
trigger must flip). All classes of a teacher are scanned in one batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from free_common.free.augment import to_model_input
from free_common.free.errors import check_finite
from free_common.free.teachers import Teacher
from free_common.free.trust.probes import TrustError

__all__ = ["TriggerScan", "scan_triggers"]

_MASK_START = -2.0  # mask logit at the start: sigmoid(-2) = 0.12 of every pixel
_LOGIT_LIMIT = 12.0  # mask and pattern logits stay within +-12 (sigmoid 6e-6 .. 1 - 6e-6)


@dataclass(frozen=True)
class TriggerScan:
    """Outcome of :func:`scan_triggers`, per class of the teacher.

    Attributes:
        mask_shares: the found mask's soft size as a share of the teacher's input pixels
            (mean of the mask in [0, 1]), per class.
        flip_rates: share of the held-out probes (those the teacher does not already give
            the class) that the mask and its pattern send to the class, per class.
        seconds: wall time.
        concentrations: share of the mask's mass inside its densest square window of a
            fifth of the image side, per class (1: one compact patch; small: scattered).
    """

    mask_shares: tuple[float, ...]
    flip_rates: tuple[float, ...]
    seconds: float
    concentrations: tuple[float, ...]

    def patch(self, k: int) -> float:
        """Class ``k``'s mask share over its concentration.

        The size of a compact patch of the same mass, grown the more the mask is scattered
        over the image.
        """
        return self.mask_shares[k] / max(self.concentrations[k], 1e-6)

    def shortcut(self, min_flip: float) -> int | None:
        """The class with the smallest :meth:`patch` flipped at ``min_flip`` or more.

        None when no class is flipped that often.
        """
        reached = [k for k, rate in enumerate(self.flip_rates) if rate >= min_flip]
        return min(reached, key=self.patch, default=None)

    def smallest(self, min_flip: float) -> float:
        """The :meth:`patch` of :meth:`shortcut` (inf when no class is flipped)."""
        k = self.shortcut(min_flip)
        return float("inf") if k is None else self.patch(k)


def scan_triggers(
    teacher: Teacher,
    probes: Tensor,
    *,
    steps: int,
    batch: int,
    lr: float,
    mask_weight: float,
    seed: int = 0,
) -> TriggerScan:
    """Search, for each class of ``teacher``, a small mask and pattern sending probes to it.

    Every class is searched at once, and each found mask is judged on probes it was not
    fitted on.

    The patched image is ``(1 - m) * x + m * p`` with mask ``m`` (1, H, W) and pattern
    ``p`` (C, H, W), both through a sigmoid, at the teacher's own input size. The first
    half of the probes fits them: each Adam step draws ``batch`` of them per class and
    minimises the cross-entropy towards the class plus ``mask_weight`` times the mask's
    mean. The flip rates are measured on the second half: a few pixels can push the
    images they were fitted on to any class of a small network, but only a real shortcut
    carries over to images it has not seen.

    Args:
        teacher: the model under test (frozen; its device is used).
        probes: probe images (N, C, H, W) in [0, 1], N >= 2.
        steps: Adam steps.
        batch: fitting images per class and step.
        lr: Adam learning rate on the mask and pattern logits.
        mask_weight: weight of the mask's mean in the loss.
        seed: draws the fitting batches.

    Raises:
        TrustError: a size out of range, or fewer than 2 probes.
        NonFiniteLossError: the loss became NaN/Inf.
    """
    if steps < 1 or batch < 1 or not lr > 0 or mask_weight < 0 or probes.shape[0] < 2:
        raise TrustError(
            f"trigger scan needs steps, batch, lr > 0, mask_weight >= 0 and 2 probes: "
            f"{steps}, {batch}, {lr}, {mask_weight}, {probes.shape[0]}"
        )
    started = time.perf_counter()
    spec = teacher.spec
    device = next(teacher.model.parameters()).device
    classes, size, channels = spec.num_classes, spec.image_size, spec.in_channels
    x = to_model_input(probes.to(device).float(), size, channels)  # (N, C, H, W)
    half = x.shape[0] // 2
    fit, held = x[:half], x[half:]
    mask_logits = torch.full((classes, 1, 1, size, size), _MASK_START, device=device)
    pattern_logits = torch.zeros((classes, 1, channels, size, size), device=device)
    params = [mask_logits.requires_grad_(True), pattern_logits.requires_grad_(True)]
    optimizer = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.9))
    generator = torch.Generator().manual_seed(seed)
    targets = torch.arange(classes, device=device).repeat_interleave(batch)  # (K*B,)
    for _ in range(steps):
        rows = torch.randint(half, (classes, batch), generator=generator).to(device)
        inputs, mask = _patched(fit[rows], mask_logits, pattern_logits)  # (K, B, C, H, W)
        logits = teacher.model(inputs.reshape(classes * batch, channels, size, size))
        loss = F.cross_entropy(logits, targets) + mask_weight * classes * mask.mean()
        check_finite(loss, "screening/trigger scan")
        mask_logits.grad, pattern_logits.grad = torch.autograd.grad(loss, params)
        optimizer.step()
        with torch.no_grad():  # no subnormal floats (slow on CPUs) from saturated logits
            for p in params:
                p.clamp_(-_LOGIT_LIMIT, _LOGIT_LIMIT)
    with torch.no_grad():
        patched, mask = _patched(held.unsqueeze(0).expand(classes, *held.shape), *params)
        flipped = teacher.model(patched.flatten(0, 1)).argmax(dim=1).reshape(classes, -1)
        clean = teacher.model(held).argmax(dim=1)  # (N - half,)
    shares, rates = [], []
    for k in range(classes):
        others = clean != k
        rates.append(float(((flipped[k] == k) & others).sum()) / max(int(others.sum()), 1))
        shares.append(float(mask[k].mean()))
    concentrations = _concentrations(mask.reshape(classes, 1, size, size))
    return TriggerScan(tuple(shares), tuple(rates), time.perf_counter() - started, concentrations)


def _concentrations(masks: Tensor) -> tuple[float, ...]:
    """Per mask (K, 1, H, W): its mass in its densest (H/5)-pixel square over its total."""
    side = max(1, masks.shape[-1] // 5)
    windows = F.avg_pool2d(masks, side, stride=1) * side * side  # (K, 1, H', W') sums
    totals = masks.sum(dim=(1, 2, 3)).clamp_min(1e-12)
    return tuple(float(v) for v in windows.flatten(1).max(dim=1).values / totals)


def _patched(images: Tensor, mask_logits: Tensor, pattern_logits: Tensor) -> tuple[Tensor, Tensor]:
    """``images`` (K, B, C, H, W) under each class's mask and pattern; and the masks."""
    mask = torch.sigmoid(mask_logits)  # (K, 1, 1, H, W)
    return (1 - mask) * images + mask * torch.sigmoid(pattern_logits), mask
