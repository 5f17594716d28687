"""FIVE for all sampled teachers at once: stacked generator clones under ``torch.func.vmap``.

Same maths as :meth:`~free_common.free.inversion.MetaGeneratorInverter` (paper Sec. 4.1,
Eq. 1-2): every teacher still gets its own clone theta_i and latent batch z_i and its own
k-step Adam trajectory. The clones are stacked along a new leading dimension (T, ...) and
the generator runs ONE vmapped forward for all teachers; Adam is element-wise, so one
Adam over the stacked tensors equals T independent Adams. Summing the per-teacher losses
before ``backward`` keeps each clone's gradient its own teacher's. The teachers
themselves (possibly different architectures) still run one after another.

Only usable when every teacher has the same number of classes (equal batch sizes; padding
would change the generator's BatchNorm batch statistics): the caller falls back to the
sequential path otherwise.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, replace_all_batch_norm_modules_, vmap

from free_common.config import InversionConfig
from free_common.free.generation import (
    Recovered,
    generation_loss,
    recovery_quality,
    target_labels,
)
from free_common.free.teachers import Teacher
from free_common.models import MetaGenerator

__all__ = ["adapt_batched"]


def _stacked_forward(generator: MetaGenerator) -> Callable[[dict[str, Tensor], Tensor], Tensor]:
    """f(params (T, ...), z (T, B, d)) -> images (T, B, C, S, S), BN on batch statistics."""
    template = copy.deepcopy(generator)
    replace_all_batch_norm_modules_(template)  # clones' running stats are never used

    def one(params: dict[str, Tensor], z: Tensor) -> Tensor:
        return functional_call(template, params, (z,))  # type: ignore[no-any-return]

    return vmap(one)  # type: ignore[no-any-return]


def _total_loss(
    images: Tensor,
    teachers: Sequence[Teacher],
    targets: Tensor,
    config: InversionConfig,
    rng: torch.Generator,
    learner: nn.Module | None,
    adv_weight: float,
) -> tuple[Tensor, list[float]]:
    losses = [
        generation_loss(images[i], t, targets, config, rng, learner=learner, adv_weight=adv_weight)[
            0
        ]
        for i, t in enumerate(teachers)
    ]
    return torch.stack(losses).sum(), [float(v.detach()) for v in losses]


def adapt_batched(
    generator: MetaGenerator,
    teachers: Sequence[Teacher],
    config: InversionConfig,
    rng: torch.Generator,
    *,
    learner: nn.Module | None = None,
    adv_weight: float = 0.0,
) -> tuple[list[Recovered], list[Tensor]]:
    """k-step adaptation of one clone per teacher, all clones in one vmapped forward.

    Args:
        generator: the meta-generator theta (not modified).
        teachers: the sampled teachers, all with the same class count.
        config: inversion settings.
        rng: CPU generator (latents of all teachers first, then augmentations).
        learner: meta-learner for the adversarial term.
        adv_weight: its weight.

    Returns:
        The recovered tasks and the FOMAML meta-gradient: for each parameter of
        ``generator`` (in order), the sum over teachers of the last step's gradient.
    """
    device = next(generator.parameters()).device
    n_teachers = len(teachers)
    targets = target_labels(teachers[0].num_classes, config.images_per_class, device)
    latents = [torch.randn(targets.shape[0], config.latent_dim, generator=rng) for _ in teachers]
    z = torch.stack(latents).to(device).requires_grad_(True)
    params = {
        n: p.detach().unsqueeze(0).repeat(n_teachers, *([1] * p.ndim)).requires_grad_(True)
        for n, p in generator.named_parameters()
    }
    inner = torch.optim.Adam(
        [
            {"params": list(params.values()), "lr": config.generator_lr},
            {"params": [z], "lr": config.latent_lr},
        ],
        betas=config.betas,
    )
    forward = _stacked_forward(generator)
    for _ in range(config.inner_steps - 1):
        inner.zero_grad(set_to_none=True)
        loss, _ = _total_loss(
            forward(params, z), teachers, targets, config, rng, learner, adv_weight
        )
        loss.backward()  # type: ignore[no-untyped-call]
        inner.step()
    images = forward(params, z)
    loss, per_teacher = _total_loss(images, teachers, targets, config, rng, learner, adv_weight)
    grads = torch.autograd.grad(loss, list(params.values()))
    images = images.detach()
    recovered = []
    for i, teacher in enumerate(teachers):
        accuracy, confidence = recovery_quality(teacher, images[i], targets)
        recovered.append(
            Recovered(
                teacher.teacher_id,
                teacher.class_keys,
                images[i],
                targets,
                accuracy,
                confidence,
                per_teacher[i],
                config.inner_steps,
            )
        )
    return recovered, [g.sum(dim=0) for g in grads]
