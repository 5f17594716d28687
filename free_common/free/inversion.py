"""FIVE: the meta-generator of FREE (paper Sec. 4.1, Eq. 1 and Eq. 2; supplement B).

For every sampled teacher M_i a clone theta_i of the meta-generator theta and a fresh latent
batch z ~ N(0, I) are adapted for k Adam steps on

    L_G(theta_i, z) = l_ce * CE(M_i(A(G_theta_i(z))), y) + l_adv * L_adv + l_bn * L_bn

(y: the teacher's classes 0..C-1, each repeated m times; A: differentiable augmentation).
The meta-gradient is first-order (FOMAML): the gradient of L_G at the last inner step's
parameters theta_i^{k-1}, summed over the teachers, feeds one step of the
meta-generator's outer Adam. The recovered task of teacher i is G_{theta_i^{k-1}}(z).

Defect fix (``README.md`` here, published defects): the outer Adam is created once and
keeps its moments across iterations (and checkpoints).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from free_common.config import InversionConfig
from free_common.free.augment import augment, to_model_input
from free_common.free.distillation import adversarial_loss, bn_statistics_loss
from free_common.free.errors import NonFiniteLossError, check_finite
from free_common.free.teachers import Teacher
from free_common.models import GeneratorSpec, MetaGenerator, build_generator

__all__ = [
    "MetaGeneratorInverter",
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


class MetaGeneratorInverter:
    """The meta-generator, its persistent outer Adam, and the k-step adaptation (FIVE).

    Args:
        config: inversion settings.
        device: where the generator and its clones live.
    """

    def __init__(self, config: InversionConfig, device: torch.device) -> None:
        self.config = config
        self.device = device
        self.generator: MetaGenerator = build_generator(generator_spec(config)).to(device)
        self.optimizer = torch.optim.Adam(
            self.generator.parameters(), lr=config.outer_lr, betas=config.betas
        )

    def invert(
        self,
        teachers: Sequence[Teacher],
        rng: torch.Generator,
        *,
        learner: nn.Module | None = None,
        adv_weight: float = 0.0,
    ) -> list[Recovered]:
        """Adapt a clone to each teacher, then take one outer (FOMAML) step.

        Args:
            teachers: the teachers sampled this iteration (repeats allowed).
            rng: CPU generator for latents and augmentation.
            learner: the meta-learner for the adversarial term.
            adv_weight: weight of the adversarial term (0 during warm-up).

        Returns:
            One :class:`Recovered` per teacher, in order.
        """
        self.optimizer.zero_grad(set_to_none=False)
        if self.config.batched and len(teachers) > 1 and _same_class_count(teachers):
            from free_common.free.batched_inversion import adapt_batched

            recovered, grads = adapt_batched(
                self.generator, teachers, self.config, rng, learner=learner, adv_weight=adv_weight
            )
            _accumulate(self.generator, grads)
        else:
            recovered = [self._adapt(t, rng, learner, adv_weight) for t in teachers]
        for name, p in self.generator.named_parameters():
            if p.grad is not None and not torch.isfinite(p.grad).all():
                raise NonFiniteLossError(f"inversion/meta-gradient:{name}", float("nan"))
        self.optimizer.step()
        return recovered

    def _adapt(
        self,
        teacher: Teacher,
        rng: torch.Generator,
        learner: nn.Module | None,
        adv_weight: float,
    ) -> Recovered:
        """K inner Adam steps on a clone; the last step's gradient is added to theta.grad."""
        cfg = self.config
        clone = copy.deepcopy(self.generator).train()
        targets = target_labels(teacher.num_classes, cfg.images_per_class, self.device)
        z = torch.randn(targets.shape[0], cfg.latent_dim, generator=rng).to(self.device)
        z.requires_grad_(True)
        inner = torch.optim.Adam(
            [
                {"params": list(clone.parameters()), "lr": cfg.generator_lr},
                {"params": [z], "lr": cfg.latent_lr},
            ],
            betas=cfg.betas,
        )
        for _ in range(cfg.inner_steps - 1):
            inner.zero_grad(set_to_none=True)
            loss, _ = generation_loss(
                clone(z), teacher, targets, cfg, rng, learner=learner, adv_weight=adv_weight
            )
            loss.backward()  # type: ignore[no-untyped-call]
            inner.step()
        images = clone(z)
        loss, _ = generation_loss(
            images, teacher, targets, cfg, rng, learner=learner, adv_weight=adv_weight
        )
        grads = torch.autograd.grad(loss, list(clone.parameters()))
        _accumulate(self.generator, grads)
        images = images.detach()
        accuracy, confidence = recovery_quality(teacher, images, targets)
        return Recovered(
            teacher.teacher_id,
            teacher.class_keys,
            images,
            targets,
            accuracy,
            confidence,
            float(loss.detach()),
            cfg.inner_steps,
        )

    def state_dict(self) -> dict[str, Any]:
        """Generator weights/buffers and the outer optimiser state."""
        return {"generator": self.generator.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.generator.load_state_dict(state["generator"])
        self.optimizer.load_state_dict(state["optimizer"])


def _same_class_count(teachers: Sequence[Teacher]) -> bool:
    return len({t.num_classes for t in teachers}) == 1


def _accumulate(module: nn.Module, grads: Sequence[Tensor]) -> None:
    """Add ``grads`` (one per parameter, in order) to the parameters' ``.grad``."""
    for p, g in zip(module.parameters(), grads, strict=True):
        if p.grad is None:
            p.grad = g.detach().clone()
        else:
            p.grad.add_(g.detach())
