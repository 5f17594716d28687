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
from typing import Any

import torch
from torch import Tensor, nn

from free_common.config import InversionConfig
from free_common.free.batched_inversion import adapt_batched
from free_common.free.errors import NonFiniteLossError
from free_common.free.generation import (
    Recovered,
    generation_loss,
    generator_spec,
    recovery_quality,
    target_labels,
)
from free_common.free.teachers import Teacher
from free_common.models import MetaGenerator, build_generator

__all__ = [
    "MetaGeneratorInverter",
    "Recovered",
    "generation_loss",
    "generator_spec",
    "recovery_quality",
    "target_labels",
]


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
