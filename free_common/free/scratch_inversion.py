"""Per-model from-scratch inversion: the baseline FREE's meta-generator is compared with.

BiDf-MKD and TGR (the baselines of the FREE paper, Sec. 5) re-initialise a generator
for every model and train it for about 200 Adam steps. This module does that with the
same generator architecture and the same loss (Eq. 1 of the FREE paper, via
:func:`~free_common.free.generation.generation_loss`), so the recovery speed-up is measured
at matched settings. It also supports "run until the teacher's accuracy on its recovered
images reaches a target", reporting the steps and seconds it took.

Screening (``free_common.free.screening``) uses it too: a short from-scratch inversion
tells an invertible teacher from a random or corrupted one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from free_common.config import InversionConfig
from free_common.free.generation import (
    Recovered,
    generation_loss,
    generator_spec,
    recovery_quality,
    target_labels,
)
from free_common.free.teachers import Teacher
from free_common.models import MetaGenerator, build_generator

__all__ = ["ScratchResult", "fresh_generator", "invert_from_scratch"]


@dataclass(frozen=True)
class ScratchResult:
    """Outcome of one from-scratch inversion.

    Attributes:
        recovered: the last generated batch and its recovery quality.
        steps: Adam steps taken.
        seconds: wall time of the steps, excluding the quality checks of ``target`` runs.
        reached: whether ``target_accuracy`` was reached (True when no target was set).
    """

    recovered: Recovered
    steps: int
    seconds: float
    reached: bool


def fresh_generator(config: InversionConfig, rng: torch.Generator) -> MetaGenerator:
    """A newly initialised generator, seeded from ``rng`` (the global RNG is untouched)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=rng))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_generator(generator_spec(config))


def invert_from_scratch(
    teacher: Teacher,
    config: InversionConfig,
    rng: torch.Generator,
    *,
    steps: int | None = None,
    images_per_class: int | None = None,
    target_accuracy: float | None = None,
    check_every: int = 5,
    learner: nn.Module | None = None,
    adv_weight: float = 0.0,
) -> ScratchResult:
    """Train a fresh generator and latent batch on ``teacher`` alone.

    Args:
        teacher: the model to invert (its device is used).
        config: generator size, learning rates, loss weights, augmentation.
        rng: CPU generator for the initialisation, latents and augmentation.
        steps: maximum Adam steps (default ``config.scratch_steps``).
        images_per_class: m (default ``config.images_per_class``).
        target_accuracy: stop as soon as the teacher's accuracy on the current
            (un-augmented) images reaches this value, checked every ``check_every`` steps.
        check_every: steps between quality checks when a target is set.
        learner: optional meta-learner for the adversarial term.
        adv_weight: weight of the adversarial term.
    """
    device = next(teacher.model.parameters()).device
    max_steps = steps if steps is not None else config.scratch_steps
    if max_steps < 1 or check_every < 1:
        raise ValueError(f"need steps >= 1 and check_every >= 1, got {max_steps}, {check_every}")
    per_class = images_per_class if images_per_class is not None else config.images_per_class
    generator = fresh_generator(config, rng).to(device).train()
    targets = target_labels(teacher.num_classes, per_class, device)
    z = torch.randn(targets.shape[0], config.latent_dim, generator=rng).to(device)
    z.requires_grad_(True)
    optimizer = torch.optim.Adam(
        [
            {"params": list(generator.parameters()), "lr": config.generator_lr},
            {"params": [z], "lr": config.latent_lr},
        ],
        betas=config.betas,
    )
    seconds, checking, reached, done = 0.0, 0.0, target_accuracy is None, 0
    started = time.perf_counter()
    for step in range(1, max_steps + 1):
        optimizer.zero_grad(set_to_none=True)
        images = generator(z)
        loss, _ = generation_loss(
            images, teacher, targets, config, rng, learner=learner, adv_weight=adv_weight
        )
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        done = step
        if target_accuracy is not None and (step % check_every == 0 or step == max_steps):
            tick = time.perf_counter()
            accuracy, _ = recovery_quality(teacher, images.detach(), targets)
            checking += time.perf_counter() - tick
            if accuracy >= target_accuracy:
                reached = True
                break
    seconds = time.perf_counter() - started - checking
    with torch.no_grad():
        final = generator(z).detach()
    accuracy, confidence = recovery_quality(teacher, final, targets)
    recovered = Recovered(
        teacher.teacher_id,
        teacher.class_keys,
        final,
        targets,
        accuracy,
        confidence,
        float(loss.detach()),
        done,
    )
    return ScratchResult(recovered, done, seconds, reached)
