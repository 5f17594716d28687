"""The meta-learner update of FREE: multi-task KD with implicit gradient alignment.

Paper Sec. 4.2, Eq. 3 and supplement C (Lemma 1, Theorem 1); ``README.md`` in this
folder. With the sampled teachers' recovered tasks T_1..T_n:

- ``alignment=True`` (FREE): clone phi' = phi, then take ONE inner step per teacher,
  sequentially, on L_KD(T_i; phi') (inner Adam lr 1e-3 as published, or SGD); then set
  grad(phi) := (phi - phi') * reptile_scale and step the outer Adam (lr 1e-3). Expanding
  the sequential steps (Theorem 1) gives sum_i grad L_i - alpha * grad(sum_{i<j} g_i.g_j)
  + O(alpha^2): descending it also raises the inner products between the teachers'
  gradients, i.e. aligns them, without computing a Hessian.
- ``alignment=False`` (ablation): the SAME recovered batches and teacher logits, the KD
  losses summed, ONE backward at phi and ONE outer Adam step; no clone, no inner steps,
  so no alignment term.
- ``hard_labels=True`` (ablation, supplement D): cross-entropy on the generator's target
  labels replaces KD in either mode.

Each teacher's batch is forwarded separately through the learner (BatchNorm in batch-
statistics mode normalises per teacher batch in both modes).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from free_common.config import InversionConfig, MetaLearnerConfig
from free_common.free.augment import augment, to_model_input
from free_common.free.distillation import supervision_loss
from free_common.free.errors import check_finite
from free_common.free.inversion import Recovered
from free_common.free.teachers import Teacher
from free_common.models import Classifier, ModelSpec, build_model

__all__ = [
    "DistillBatch",
    "build_meta_learner",
    "distill_batches",
    "learner_spec",
    "meta_learner_step",
]


@dataclass(frozen=True)
class DistillBatch:
    """One teacher's recovered task, ready for distillation.

    Attributes:
        teacher_id: the teacher.
        images: augmented images at the learner's input, (B, C_l, S_l, S_l).
        teacher_logits: the teacher's logits on the same augmented images, (B, C_t).
        targets: the generator's target labels, (B,) int64.
    """

    teacher_id: str
    images: Tensor
    teacher_logits: Tensor
    targets: Tensor


def learner_spec(config: MetaLearnerConfig) -> ModelSpec:
    """The meta-learner's model spec (head: ``n_way`` outputs; grey or RGB at 0.5/0.5)."""
    return ModelSpec(
        arch=config.arch,
        in_channels=config.channels,
        image_size=config.image_size,
        num_classes=config.n_way,
        width=config.width,
        mean=(0.5,) * config.channels,
        std=(0.5,) * config.channels,
    )


def build_meta_learner(config: MetaLearnerConfig) -> Classifier:
    """A freshly initialised meta-learner with batch-statistics BatchNorm (MAML convention)."""
    return build_model(learner_spec(config), batch_stats=True)


def distill_batches(
    recovered: Sequence[Recovered],
    teachers: Sequence[Teacher],
    inversion: InversionConfig,
    spec: ModelSpec,
    rng: torch.Generator,
) -> list[DistillBatch]:
    """Augment each recovered task and record its teacher's logits (no grad).

    Args:
        recovered: tasks from :class:`~free_common.free.inversion.MetaGeneratorInverter`.
        teachers: their teachers, in the same order.
        inversion: augmentation settings.
        spec: the learner's spec (input size/channels).
        rng: draws the augmentation.
    """
    batches = []
    for task, teacher in zip(recovered, teachers, strict=True):
        x = augment(
            task.images,
            padding=inversion.crop_padding,
            flip=inversion.horizontal_flip,
            generator=rng,
        )
        with torch.no_grad():
            t_in = to_model_input(x, teacher.spec.image_size, teacher.spec.in_channels)
            logits = teacher.model(t_in)
        images = to_model_input(x, spec.image_size, spec.in_channels)
        batches.append(DistillBatch(task.teacher_id, images, logits, task.targets))
    return batches


def _loss(model: torch.nn.Module, batch: DistillBatch, config: MetaLearnerConfig) -> Tensor:
    logits = model(batch.images)
    loss = supervision_loss(
        logits,
        batch.teacher_logits,
        batch.targets,
        temperature=config.temperature,
        hard_labels=config.hard_labels,
    )
    check_finite(loss, "meta_learner/" + ("ce" if config.hard_labels else "kd"))
    return loss


def _inner_optimizer(model: torch.nn.Module, config: MetaLearnerConfig) -> torch.optim.Optimizer:
    if config.inner_optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.inner_lr)
    return torch.optim.Adam(model.parameters(), lr=config.inner_lr)


def _aligned_step(
    learner: Classifier,
    outer: torch.optim.Optimizer,
    batches: Sequence[DistillBatch],
    config: MetaLearnerConfig,
) -> list[float]:
    clone = copy.deepcopy(learner)
    inner = _inner_optimizer(clone, config)
    losses = []
    for batch in batches:
        inner.zero_grad(set_to_none=True)
        loss = _loss(clone, batch, config)
        loss.backward()  # type: ignore[no-untyped-call]
        inner.step()
        losses.append(float(loss.detach()))
    outer.zero_grad(set_to_none=True)
    with torch.no_grad():
        for p, q in zip(learner.parameters(), clone.parameters(), strict=True):
            p.grad = (p - q) * config.reptile_scale
    outer.step()
    return losses


def _joint_step(
    learner: Classifier,
    outer: torch.optim.Optimizer,
    batches: Sequence[DistillBatch],
    config: MetaLearnerConfig,
) -> list[float]:
    outer.zero_grad(set_to_none=True)
    losses = [_loss(learner, batch, config) for batch in batches]
    torch.stack(losses).sum().backward()  # type: ignore[no-untyped-call]
    outer.step()
    return [float(loss.detach()) for loss in losses]


def meta_learner_step(
    learner: Classifier,
    outer: torch.optim.Optimizer,
    batches: Sequence[DistillBatch],
    config: MetaLearnerConfig,
) -> list[float]:
    """One meta-learner update (Eq. 3); returns each teacher's loss (before its step).

    Args:
        learner: the meta-learner, updated in place.
        outer: its persistent outer optimiser (shared with the replay).
        batches: one :class:`DistillBatch` per sampled teacher, in sampling order.
        config: alignment / hard-label switches, temperature, inner optimiser.

    Raises:
        NonFiniteLossError: a loss became NaN/Inf (term ``meta_learner/kd`` or ``/ce``).
    """
    learner.train()
    if config.alignment:
        return _aligned_step(learner, outer, batches, config)
    return _joint_step(learner, outer, batches, config)
