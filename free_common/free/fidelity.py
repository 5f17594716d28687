"""Recovery fidelity: how much of a teacher's task its recovered images carry.

The teacher's accuracy on its own recovered images (the recovery quality that the
inverters report) says only that the teacher recognises them; a generator can satisfy a
network with textures that teach nothing. What the meta-learner needs is that the images
*transfer* the task. Fidelity measures that directly, as data-free distillation papers
score their synthetic sets (e.g. DeepInversion, Yin et al., CVPR 2020): a fresh student
with the teacher's architecture is distilled on the recovered images alone, then scored on
real held-out images of the teacher's classes.

The student sees each image through the same random-crop augmentation that inversion
uses, learns the teacher's tempered soft labels (Hinton et al., 2015), and is scored in
eval mode. Chance is ``1 / C``; the teacher's own held-out accuracy is the ceiling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from free_common.free.augment import random_crop, to_model_input
from free_common.free.teachers import Teacher
from free_common.models import build_model

__all__ = ["FidelityError", "FidelitySettings", "distill_student", "recovery_fidelity"]


class FidelityError(ValueError):
    """Inputs that cannot give a fidelity: no images, labels outside the teacher's classes."""


@dataclass(frozen=True)
class FidelitySettings:
    """How the student is distilled.

    Attributes:
        steps: Adam steps on the recovered images (full batch, or ``batch_size`` rows).
        lr: Adam learning rate.
        temperature: softmax temperature of the teacher's and student's outputs.
        batch_size: images per step (all of them when fewer).
        padding: random-crop padding in pixels (0: no augmentation).
    """

    steps: int = 200
    lr: float = 1e-3
    temperature: float = 4.0
    batch_size: int = 64
    padding: int = 2

    def __post_init__(self) -> None:
        """Reject settings that cannot train."""
        if self.steps < 1 or self.batch_size < 1 or self.padding < 0:
            raise FidelityError(
                f"need steps >= 1, batch_size >= 1, padding >= 0; got {self.steps}, "
                f"{self.batch_size}, {self.padding}"
            )
        if not (self.lr > 0 and self.temperature > 0):
            raise FidelityError(
                f"need lr > 0 and temperature > 0, got {self.lr}, {self.temperature}"
            )


def distill_student(
    teacher: Teacher, images: Tensor, settings: FidelitySettings, seed: int
) -> torch.nn.Module:
    """A fresh ``teacher.spec`` model distilled from ``teacher`` on ``images`` only.

    Args:
        teacher: the model whose outputs are the soft labels (frozen, eval mode).
        images: float images in [0, 1], (N, C, H, W), any size and channels (converted to
            the teacher's input like the inverters do).
        settings: the distillation's steps, rate, temperature and augmentation.
        seed: seeds the student's initial weights, the batches and the crops.

    Returns:
        The student in eval mode, on the teacher's device.

    Raises:
        FidelityError: no images.
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise FidelityError(f"need a non-empty (N, C, H, W) batch, got shape {tuple(images.shape)}")
    device = next(teacher.model.parameters()).device
    spec = teacher.spec
    inputs = to_model_input(images.to(device), spec.image_size, spec.in_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = build_model(spec).to(device)
    optimizer = torch.optim.Adam(student.parameters(), lr=settings.lr)
    generator = torch.Generator().manual_seed(seed)
    t = settings.temperature
    student.train()
    for _ in range(settings.steps):
        rows = torch.randperm(inputs.shape[0], generator=generator)[: settings.batch_size]
        batch = random_crop(inputs[rows.to(device)], settings.padding, generator)
        with torch.no_grad():
            soft = F.softmax(teacher.model(batch) / t, dim=1)
        log_student = F.log_softmax(student(batch) / t, dim=1)
        loss = F.kl_div(log_student, soft, reduction="batchmean") * t * t
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    return student.eval()


@torch.no_grad()
def _accuracy(model: torch.nn.Module, images: Tensor, labels: Tensor, batch: int = 256) -> float:
    correct = 0
    for start in range(0, images.shape[0], batch):
        logits = model(images[start : start + batch])
        correct += int((logits.argmax(dim=1) == labels[start : start + batch]).sum())
    return correct / images.shape[0]


def recovery_fidelity(
    teacher: Teacher,
    recovered_images: Tensor,
    held_images: Tensor,
    held_labels: Tensor,
    settings: FidelitySettings | None = None,
    seed: int = 0,
) -> float:
    """Accuracy on real held-out images of a student distilled on recovered images only.

    Args:
        teacher: the inverted teacher.
        recovered_images: its recovered images, float in [0, 1], (N, C, H, W).
        held_images: real images of the teacher's classes that it was not trained on,
            float in [0, 1], (M, C', H', W') (converted to the teacher's input).
        held_labels: (M,) int64, the teacher's output index of each real image.
        settings: the distillation (default :class:`FidelitySettings`).
        seed: seeds the student.

    Returns:
        The student's accuracy in [0, 1] (chance ``1 / teacher.num_classes``).

    Raises:
        FidelityError: no held-out images, a label count that does not match, or a label
            outside ``0 .. teacher.num_classes - 1``.
    """
    if held_images.ndim != 4 or held_images.shape[0] == 0:
        raise FidelityError(f"need held-out images (M, C, H, W), got {tuple(held_images.shape)}")
    if held_labels.shape != (held_images.shape[0],):
        raise FidelityError(
            f"{held_images.shape[0]} held-out images but labels of shape {tuple(held_labels.shape)}"
        )
    if int(held_labels.min()) < 0 or int(held_labels.max()) >= teacher.num_classes:
        raise FidelityError(
            f"held-out labels must lie in 0..{teacher.num_classes - 1}, got "
            f"{int(held_labels.min())}..{int(held_labels.max())}"
        )
    student = distill_student(teacher, recovered_images, settings or FidelitySettings(), seed)
    device = next(student.parameters()).device
    spec = teacher.spec
    real = to_model_input(held_images.to(device), spec.image_size, spec.in_channels)
    return _accuracy(student, real, held_labels.to(device))
