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
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from free_common.free.augment import to_model_input
from free_common.free.errors import check_finite
from free_common.free.teachers import Teacher
from free_common.free.trust.probes import TrustError

__all__ = ["TriggerScan", "confirmed_scan", "scan_triggers"]

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
        refined: the classes whose mask and pattern were fitted further on their own
            (``refine_steps`` of :func:`scan_triggers`); their entries are the refined ones.
        scans: independent scans run (:func:`confirmed_scan`); this is the one whose
            smallest patch was the largest, and ``seconds`` covers them all.
    """

    mask_shares: tuple[float, ...]
    flip_rates: tuple[float, ...]
    seconds: float
    concentrations: tuple[float, ...]
    refined: tuple[int, ...] = ()
    scans: int = 1

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


def confirmed_scan(
    teacher: Teacher,
    probes: Tensor,
    *,
    confirmations: int,
    limit: float,
    min_flip: float,
    **settings: Any,
) -> TriggerScan:
    """:func:`scan_triggers`, repeated with other seeds while it finds a patch below ``limit``.

    Seed 0 first, then seeds 1..``confirmations`` at most. An honest class with a natural
    shortcut lands below the limit in some draws and above in others; an implanted trigger
    is found in every draw. The scan returned is the one whose smallest patch (at
    ``min_flip``) is the largest, so a teacher scores below ``limit`` only when every scan
    run put it there.

    Args:
        teacher: the model under test, as for :func:`scan_triggers`.
        probes: probe images (N, C, H, W) in [0, 1], N >= 2.
        confirmations: further scans at most (0: one scan).
        limit: the patch below which a scan is repeated.
        min_flip: held-out flip rate from which a class counts as reached.
        **settings: the other arguments of :func:`scan_triggers` (``steps``, ``batch``,
            ``lr``, ``mask_weight``, ``refine_steps``, ``refine_below``).

    Raises:
        TrustError: ``confirmations`` < 0, or as :func:`scan_triggers`.
    """
    if confirmations < 0:
        raise TrustError(f"trigger scan needs confirmations >= 0: {confirmations}")
    scans = [scan_triggers(teacher, probes, min_flip=min_flip, seed=0, **settings)]
    while scans[-1].smallest(min_flip) < limit and len(scans) <= confirmations:
        scans.append(scan_triggers(teacher, probes, min_flip=min_flip, seed=len(scans), **settings))
    kept = max(scans, key=lambda scan: scan.smallest(min_flip))
    return replace(kept, seconds=sum(scan.seconds for scan in scans), scans=len(scans))


def scan_triggers(
    teacher: Teacher,
    probes: Tensor,
    *,
    steps: int,
    batch: int,
    lr: float,
    mask_weight: float,
    refine_steps: int = 0,
    refine_below: float = 0.0,
    min_flip: float = 1.0,
    seed: int = 0,
) -> TriggerScan:
    """Search, for each class of ``teacher``, a small mask and pattern sending probes to it.

    Every class is searched at once, and each found mask is judged on probes it was not
    fitted on. The classes that look like shortcuts after that (flipped at ``min_flip``
    or more through a :meth:`TriggerScan.patch` below ``refine_below``) are then fitted
    ``refine_steps`` more steps on their own and judged again: a few dozen steps leave
    part of every mask scattered, and the scattered part of an honest class's mask is
    what reaches it, while a backdoor's mask settles onto its trigger.

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
        refine_steps: further Adam steps for the shortcut-like classes (0: none).
        refine_below: patch below which a class flipped at ``min_flip`` is refined.
        min_flip: held-out flip rate from which a class counts as reached.
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
    if refine_steps < 0:
        raise TrustError(f"trigger scan needs refine_steps >= 0: {refine_steps}")
    started = time.perf_counter()
    spec = teacher.spec
    device = next(teacher.model.parameters()).device
    classes, size, channels = spec.num_classes, spec.image_size, spec.in_channels
    x = to_model_input(probes.to(device).float(), size, channels)  # (N, C, H, W)
    half = x.shape[0] // 2
    fit, held = x[:half], x[half:]
    fitter = _Fitter(teacher.model, fit, batch, lr, mask_weight, seed)
    every = list(range(classes))
    mask_logits = torch.full((classes, 1, 1, size, size), _MASK_START, device=device)
    pattern_logits = torch.zeros((classes, 1, channels, size, size), device=device)
    fitter.fit(every, mask_logits, pattern_logits, steps)
    scan = _judge(teacher.model, held, every, mask_logits, pattern_logits)
    refined = [k for k in every if scan.flip_rates[k] >= min_flip and scan.patch(k) < refine_below]
    if refined and refine_steps > 0:
        masks, patterns = mask_logits[refined].clone(), pattern_logits[refined].clone()
        fitter.fit(refined, masks, patterns, refine_steps)
        scan = _merged(scan, _judge(teacher.model, held, refined, masks, patterns), refined)
    return replace(scan, seconds=time.perf_counter() - started)


def _merged(scan: TriggerScan, again: TriggerScan, refined: list[int]) -> TriggerScan:
    """``scan`` with class ``refined[i]``'s entries replaced by row ``i`` of ``again``."""
    shares, rates, concentrations = (
        list(scan.mask_shares),
        list(scan.flip_rates),
        list(scan.concentrations),
    )
    for i, k in enumerate(refined):
        shares[k], rates[k] = again.mask_shares[i], again.flip_rates[i]
        concentrations[k] = again.concentrations[i]
    return TriggerScan(
        tuple(shares), tuple(rates), scan.seconds, tuple(concentrations), tuple(refined)
    )


class _Fitter:
    """Adam on masks and patterns (one per class) towards their classes, on ``fit`` images."""

    def __init__(
        self, model: torch.nn.Module, fit: Tensor, batch: int, lr: float, weight: float, seed: int
    ) -> None:
        self.model, self.fit_images, self.batch = model, fit, batch
        self.lr, self.weight = lr, weight
        self.generator = torch.Generator().manual_seed(seed)

    def fit(
        self, classes: list[int], mask_logits: Tensor, pattern_logits: Tensor, steps: int
    ) -> None:
        """``steps`` Adam steps, in place, on masks (K, 1, 1, H, W) and patterns (K, 1, C, H, W).

        Row ``i`` is fitted towards class ``classes[i]``; each step draws ``batch`` fitting
        images per row and minimises the cross-entropy plus ``weight`` times the mask's mean.
        """
        count, (channels, height, width) = len(classes), self.fit_images.shape[1:]
        device = mask_logits.device
        params = [mask_logits.requires_grad_(True), pattern_logits.requires_grad_(True)]
        optimizer = torch.optim.Adam(params, lr=self.lr, betas=(0.5, 0.9))
        targets = torch.tensor(classes, device=device).repeat_interleave(self.batch)  # (K*B,)
        for _ in range(steps):
            rows = torch.randint(
                self.fit_images.shape[0], (count, self.batch), generator=self.generator
            ).to(device)
            inputs, mask = _patched(self.fit_images[rows], mask_logits, pattern_logits)
            logits = self.model(inputs.reshape(count * self.batch, channels, height, width))
            loss = F.cross_entropy(logits, targets) + self.weight * count * mask.mean()
            check_finite(loss, "screening/trigger scan")
            mask_logits.grad, pattern_logits.grad = torch.autograd.grad(loss, params)
            optimizer.step()
            with torch.no_grad():  # no subnormal floats (slow on CPUs) from saturated logits
                for p in params:
                    p.clamp_(-_LOGIT_LIMIT, _LOGIT_LIMIT)
        mask_logits.requires_grad_(False)
        pattern_logits.requires_grad_(False)


def _judge(
    model: torch.nn.Module,
    held: Tensor,
    classes: list[int],
    mask_logits: Tensor,
    pattern_logits: Tensor,
) -> TriggerScan:
    """Row ``i``'s mask and pattern on the ``held`` images (N, C, H, W), towards ``classes[i]``.

    Flip rates count the held images the model does not already give the class.
    """
    count = len(classes)
    with torch.no_grad():
        patched, mask = _patched(
            held.unsqueeze(0).expand(count, *held.shape), mask_logits, pattern_logits
        )
        flipped = model(patched.flatten(0, 1)).argmax(dim=1).reshape(count, -1)
        clean = model(held).argmax(dim=1)  # (N,)
    shares, rates = [], []
    for i, k in enumerate(classes):
        others = clean != k
        rates.append(float(((flipped[i] == k) & others).sum()) / max(int(others.sum()), 1))
        shares.append(float(mask[i].mean()))
    concentrations = _concentrations(mask.reshape(count, 1, *mask.shape[-2:]))
    return TriggerScan(tuple(shares), tuple(rates), 0.0, concentrations)


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
