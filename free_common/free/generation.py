"""What every inversion shares: the recovered-task record, the generator spec and Eq. 1.

FREE's meta-generator (:mod:`.inversion`), its vmapped form for all teachers at once
(:mod:`.batched_inversion`) and the per-model from-scratch baseline
(:mod:`.scratch_inversion`) all minimise the same generation loss (paper Sec. 4.1, Eq. 1)
and return the same :class:`Recovered` task; they live here so that none of those modules
imports another.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from free_common.config import InversionConfig
from free_common.free.augment import augment, to_model_input
from free_common.free.distillation import adversarial_loss, bn_statistics_loss
from free_common.free.errors import check_finite
from free_common.free.teachers import Teacher
from free_common.models import GeneratorSpec

__all__ = [
    "Recovered",
    "generation_loss",
    "generator_spec",
    "recovery_quality",
    "target_labels",
]


@dataclass(frozen=True)
class Recovered:
    """One recovered task.

    Attributes:
        teacher_id: the inverted teacher.
        class_keys: the teacher's class keys; ``targets`` index into them.
        images: generator-resolution images in [0, 1], (C*m, channels, S, S), detached.
        targets: (C*m,) int64, the class each image was generated for.
        accuracy: the teacher's accuracy on ``images`` (recovery quality).
        confidence: the teacher's mean max-softmax probability on ``images``.
        loss: the last inner step's total generator loss.
        steps: inner steps taken.
    """

    teacher_id: str
    class_keys: tuple[str, ...]
    images: Tensor
    targets: Tensor
    accuracy: float
    confidence: float
    loss: float
    steps: int


def generator_spec(config: InversionConfig) -> GeneratorSpec:
    """The Table 1 generator of ``config`` (latent size, width nf, channels nc, side)."""
    return GeneratorSpec(
        latent_dim=config.latent_dim,
        width=config.generator_width,
        out_channels=config.channels,
        image_size=config.image_size,
    )


def target_labels(num_classes: int, per_class: int, device: torch.device) -> Tensor:
    """``[0]*m + [1]*m + ... + [C-1]*m`` as int64, shape (C*m,)."""
    return torch.arange(num_classes, device=device).repeat_interleave(per_class)


def recovery_quality(teacher: Teacher, images: Tensor, targets: Tensor) -> tuple[float, float]:
    """Teacher accuracy on its (un-augmented) recovered images and its mean confidence.

    Args:
        teacher: the inverted teacher.
        images: (B, C, S, S) generator-resolution images in [0, 1].
        targets: (B,) int64 target classes.

    Returns:
        ``(accuracy, confidence)``, both in [0, 1].
    """
    spec = teacher.spec
    with torch.no_grad():
        logits = teacher.model(to_model_input(images, spec.image_size, spec.in_channels))
        probs = logits.float().softmax(dim=1)
    accuracy = float((probs.argmax(dim=1) == targets).float().mean())
    return accuracy, float(probs.max(dim=1).values.mean())


def generation_loss(
    images: Tensor,
    teacher: Teacher,
    targets: Tensor,
    config: InversionConfig,
    rng: torch.Generator,
    *,
    learner: nn.Module | None = None,
    adv_weight: float = 0.0,
) -> tuple[Tensor, dict[str, float]]:
    """Eq. 1 on one generated batch.

    Args:
        images: (B, C, S, S) generator output in [0, 1].
        teacher: the teacher to invert.
        targets: (B,) target classes.
        config: weights and augmentation settings.
        rng: draws the augmentation.
        learner: the meta-learner for the adversarial term (its parameters get no gradient).
        adv_weight: weight of the adversarial term (0 during warm-up).

    Returns:
        ``(loss, terms)``: the scalar loss with graph and each term's value.

    Raises:
        NonFiniteLossError: a term is NaN or Inf (named ``inversion/<term>``).
    """
    x = augment(images, padding=config.crop_padding, flip=config.horizontal_flip, generator=rng)
    spec = teacher.spec
    with bn_statistics_loss(teacher.model) as bn_terms:
        logits = teacher.model(to_model_input(x, spec.image_size, spec.in_channels))
    ce = F.cross_entropy(logits, targets)
    terms = {"ce": check_finite(ce, "inversion/ce")}
    loss = config.ce_weight * ce
    if config.bn_weight > 0 and bn_terms:
        bn = torch.stack(bn_terms).sum()
        terms["bn"] = check_finite(bn, "inversion/bn")
        loss = loss + config.bn_weight * bn
    if adv_weight > 0 and learner is not None:
        adv = adversarial_loss(_frozen_forward(learner, x), logits)
        terms["adv"] = check_finite(adv, "inversion/adv")
        loss = loss + adv_weight * adv
    return loss, terms


def _frozen_forward(learner: nn.Module, images: Tensor) -> Tensor:
    """Learner logits on ``images`` with its parameters detached (grad only to the images)."""
    spec = getattr(learner, "spec", None)
    if spec is not None:
        images = to_model_input(images, spec.image_size, spec.in_channels)
    params = {n: p.detach() for n, p in learner.named_parameters()}
    return functional_call(learner, params, (images,))  # type: ignore[no-any-return]
