"""Distillation losses of FREE (paper Sec. 4.2 Eq. 3 and the inversion terms of Eq. 1).

Defect fix (``free_common/free/README.md``, published defects): the published code passes
*probabilities* to ``kl_div``, which is not a KL divergence. Here every divergence is a
true ``KL(teacher || student)`` computed from log-probabilities with temperature T and
scaled by T**2 (Hinton et al., 2015), so gradients keep their size as T changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "adversarial_loss",
    "bn_statistics_loss",
    "kd_loss",
    "match_classes",
    "supervision_loss",
]


def match_classes(student_logits: Tensor, num_classes: int) -> Tensor:
    """The student's first ``num_classes`` logits, (B, >= C) -> (B, C).

    The meta-learner's head has ``n_way`` outputs; a teacher with C <= n_way classes is
    distilled into the first C of them (output i of the teacher <-> output i).
    """
    if student_logits.shape[1] < num_classes:
        raise ValueError(
            f"student has {student_logits.shape[1]} outputs, teacher has {num_classes}"
        )
    return student_logits[:, :num_classes]


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``T**2 * KL(softmax(t/T) || softmax(s/T))`` averaged over the batch.

    Args:
        student_logits: (B, C) (or more columns; the first C are used).
        teacher_logits: (B, C), treated as constants.
        temperature: T > 0.

    Returns:
        Scalar loss.
    """
    student = match_classes(student_logits, teacher_logits.shape[1])
    log_s = F.log_softmax(student / temperature, dim=1)
    log_t = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    kl = F.kl_div(log_s, log_t, reduction="batchmean", log_target=True)
    return kl * temperature**2


def supervision_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    *,
    temperature: float,
    hard_labels: bool,
) -> Tensor:
    """KD on the teacher's soft labels, or (ablation) CE on the generator's target labels.

    Args:
        student_logits: (B, >= C).
        teacher_logits: (B, C).
        targets: (B,) int64 target classes the images were generated for.
        temperature: KD temperature.
        hard_labels: use ``cross_entropy(student, targets)`` instead of KD.
    """
    if hard_labels:
        return F.cross_entropy(match_classes(student_logits, teacher_logits.shape[1]), targets)
    return kd_loss(student_logits, teacher_logits, temperature)


def adversarial_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Boundary term for the generator: ``-mean_b 1[argmax s = argmax t] KL(t_b || s_b)``.

    Minimising it pushes generated images towards points where the learner still agrees
    with the teacher but disagrees in distribution (BiDf-MKD's hard samples, used by FREE
    after warm-up). Gradients flow into both logits' inputs (the images); callers keep
    the learner's parameters out of the optimiser.

    Args:
        student_logits: (B, >= C), learner outputs on the images.
        teacher_logits: (B, C), teacher outputs on the same images.
    """
    student = match_classes(student_logits, teacher_logits.shape[1])
    log_s = F.log_softmax(student, dim=1)
    log_t = F.log_softmax(teacher_logits, dim=1)
    per_sample = (log_t.exp() * (log_t - log_s)).sum(dim=1)  # (B,)
    agree = (student.argmax(dim=1) == teacher_logits.argmax(dim=1)).to(per_sample.dtype)
    return -(agree * per_sample).mean()


@contextmanager
def bn_statistics_loss(model: nn.Module) -> Iterator[list[Tensor]]:
    """Collect DeepInversion's BatchNorm-statistics terms while the block runs.

    Each forward through a BatchNorm2d with running statistics appends
    ``||mean(x) - running_mean||_2 + ||var(x) - running_var||_2`` (per-channel statistics
    of its input x, shape (B, C, H, W)) to the yielded list; sum it for the loss.
    """
    terms: list[Tensor] = []

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], _: Tensor) -> None:
        assert isinstance(module, nn.BatchNorm2d)
        if module.running_mean is None or module.running_var is None:
            return
        x = inputs[0]
        # two passes as Tensor.var makes them, but about 2x faster on CPU over these dims
        mean = x.mean(dim=(0, 2, 3), keepdim=True)  # (1, C, 1, 1)
        var = (x - mean).pow(2).mean(dim=(0, 2, 3))  # (C,)
        mean = mean.flatten()
        terms.append(
            torch.linalg.vector_norm(mean - module.running_mean)
            + torch.linalg.vector_norm(var - module.running_var)
        )

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.BatchNorm2d)
    ]
    try:
        yield terms
    finally:
        for handle in handles:
            handle.remove()
