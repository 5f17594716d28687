"""Feature distillation of the best pool models into the meta-learner (after meta-training).

Why: on the glyph pools, the single pool model whose features classify meta-val tasks best
by nearest centroid beats every meta-learner trained from recovered tasks, and the
concatenated features of a few such models beat it by several points more (an ensemble
costs k times the device's compute, so it is not what we ship). This stage compresses
that ensemble into the one meta-learner, with no real data: the images are FREE's memory
bank of recovered tasks.

    L(phi, {P_t}) = mean_{t in top-k} ( 1 - cos( P_t f_phi(x), g_t(x) ) )

for a batch x of augmented bank images, the meta-learner's features f_phi (B, F), the
teacher's penultimate features g_t (B, F_t) and one linear projector P_t: F -> F_t per
teacher (feature distillation with a learned projection, as in FitNets, Romero et al.,
ICLR 2015, and multi-teacher feature amalgamation, Shen et al., AAAI 2019). Cosine
rather than squared error: the teachers' feature scales differ by architecture and width.

Teachers run with batch statistics (as every model is meta-tested here), so their running
statistics are neither used nor touched. The projectors are training scaffolding and are
never exported; the meta-learner's head is left as it is.

The teachers only compute targets (no gradient flows through them), so they may run in
bfloat16 (``teacher_dtype``, autocast; the targets are cast back to float32): on two CPU
cores with AVX512-BF16 a step with five Conv4 teachers takes about half its float32 time,
with the targets' cosine to their float32 values above 0.9999
(``python -m scripts.bench.teacher_precision``). The meta-learner and the projectors
train in float32 by default; with ``learner_dtype`` bfloat16 their forward and backward
passes run under bfloat16 autocast (mixed precision: the weights, their Adam state and the
loss stay float32), which takes about another third off a step on such a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from free_common.config import TEACHER_PRECISIONS
from free_common.evaluation import evaluation_copy
from free_common.free.augment import augment, to_model_input
from free_common.free.errors import check_finite
from free_common.free.teachers import Teacher
from free_common.models import Classifier

__all__ = ["PoolDistiller", "feature_teacher", "precision_dtype", "projector"]


def precision_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The stage's number format for ``precision`` (``"auto"``, ``"float32"``, ``"bfloat16"``).

    Resolves ``pool_kd.teacher_precision`` and ``pool_kd.learner_precision`` alike.

    ``"auto"`` is bfloat16 where ``device`` computes it natively (a CUDA GPU with bf16
    support, a CPU with AVX512-BF16 or AMX tiles), else float32: emulated bfloat16 can be
    slower than float32.

    Raises:
        ValueError: an unknown ``precision``.
    """
    if precision == "float32":
        return torch.float32
    if precision == "bfloat16":
        return torch.bfloat16
    if precision != "auto":
        choices = ", ".join(TEACHER_PRECISIONS)
        raise ValueError(f"unknown precision {precision!r}: one of {choices}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and _cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def _cpu_has_native_bf16() -> bool:
    """The CPU has AVX512-BF16 or AMX tile instructions (torch's own CPU feature probe)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def feature_teacher(teacher: Teacher, device: torch.device) -> Classifier:
    """A frozen batch-statistics copy of ``teacher``'s classifier on ``device``.

    Raises:
        TypeError: the teacher's model is not a :class:`Classifier` (no feature path).
    """
    if not isinstance(teacher.model, Classifier):
        raise TypeError(f"teacher {teacher.teacher_id} has no feature extractor")
    copy = evaluation_copy(teacher.model, teacher.spec.num_classes, seed=0, need_head=False)
    return copy.to(device).requires_grad_(False)


def projector(in_features: int, out_features: int, rng: torch.Generator) -> nn.Linear:
    """A linear map (F -> F_t) with nn.Linear's default initial range, drawn from ``rng``."""
    layer = nn.Linear(in_features, out_features)
    bound = 1.0 / in_features**0.5
    with torch.no_grad():
        layer.weight.copy_(torch.rand(out_features, in_features, generator=rng) * 2 * bound - bound)
        layer.bias.copy_(torch.rand(out_features, generator=rng) * 2 * bound - bound)
    return layer


class PoolDistiller:
    """The stage's teachers, projectors and optimiser; one :meth:`step` per update.

    Args:
        learner: the meta-learner (student), updated in place; its weights are put in
            channels-last layout (the values are unchanged).
        teachers: the pool models to distil (k of them, in rank order).
        lr: Adam learning rate of the learner and the projectors.
        shift: random-crop padding of the bank images.
        rng: draws the projectors' initial weights.
        device: where the teachers and projectors live.
        teacher_dtype: the teachers' forward passes run in this format (float32 or
            bfloat16 autocast); their targets are float32 either way.
        learner_dtype: the learner's and projectors' passes run in this format (float32,
            or bfloat16 autocast with float32 weights and loss).

    Raises:
        ValueError: no teacher, or a ``teacher_dtype`` or ``learner_dtype`` other than
            float32 or bfloat16.
    """

    def __init__(
        self,
        learner: Classifier,
        teachers: Sequence[Teacher],
        *,
        lr: float,
        shift: int,
        rng: torch.Generator,
        device: torch.device,
        teacher_dtype: torch.dtype = torch.float32,
        learner_dtype: torch.dtype = torch.float32,
    ) -> None:
        if not teachers:
            raise ValueError("pool distillation needs at least one teacher")
        for name, dtype in (("teacher_dtype", teacher_dtype), ("learner_dtype", learner_dtype)):
            if dtype not in (torch.float32, torch.bfloat16):
                raise ValueError(f"{name} must be float32 or bfloat16, got {dtype}")
        self.teacher_dtype = teacher_dtype
        self.learner_dtype = learner_dtype
        self.device_type = device.type
        # The stage's batches are channels-last (see loss); a learner whose weights are not
        # ran its grey-image stage steps about 1.4x slower on one thread (values equal up to
        # rounding).
        self.learner = learner.to(memory_format=torch.channels_last)
        self.teachers = list(teachers)
        self.shift = shift
        self.extractors = [feature_teacher(t, device) for t in self.teachers]
        self.projectors = nn.ModuleList(
            projector(learner.num_features, e.num_features, rng) for e in self.extractors
        ).to(device)
        self.optimizer = torch.optim.Adam(
            [*learner.parameters(), *self.projectors.parameters()], lr=lr
        )

    @property
    def teacher_ids(self) -> list[str]:
        """The distilled teachers' ids, in rank order."""
        return [t.teacher_id for t in self.teachers]

    def loss(self, images: Tensor, rng: torch.Generator) -> Tensor:
        """The mean cosine distance over teachers on one augmented batch.

        Args:
            images: bank images in [0, 1], (B, C, S, S).
            rng: draws the augmentation.

        Returns:
            A scalar in [0, 2], differentiable w.r.t. the learner and the projectors.
        """
        x = augment(images, padding=self.shift, flip=False, generator=rng)
        spec = self.learner.spec
        self.learner.train()
        low = self.learner_dtype == torch.bfloat16
        with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=low):
            features = self.learner.forward_features(
                to_model_input(x, spec.image_size, spec.in_channels).contiguous(
                    memory_format=torch.channels_last
                )
            )  # (B, F)
            projected = [project(features) for project in self.projectors]  # (B, F_t) each
        terms = []
        for teacher, extractor, student in zip(
            self.teachers, self.extractors, projected, strict=True
        ):
            target = self._target(extractor, teacher, x)  # (B, F_t), float32
            terms.append(1 - F.cosine_similarity(student.float(), target, dim=1).mean())
        return torch.stack(terms).mean()

    def _target(self, extractor: Classifier, teacher: Teacher, x: Tensor) -> Tensor:
        """One teacher's float32 features (B, F_t) of the augmented batch x (B, C, S, S)."""
        inputs = to_model_input(x, teacher.spec.image_size, teacher.spec.in_channels)
        low = self.teacher_dtype == torch.bfloat16
        with (
            torch.no_grad(),
            torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=low),
        ):
            return extractor.forward_features(inputs).float()

    def step(self, images: Tensor, rng: torch.Generator) -> float:
        """One Adam update on a batch of bank images (B, C, S, S); returns the loss before it.

        Raises:
            NonFiniteLossError: the loss became NaN/Inf (term ``pool_kd/cosine``).
        """
        loss = self.loss(images, rng)
        check_finite(loss, "pool_kd/cosine")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.optimizer.step()
        return float(loss.detach())

    def state_dict(self) -> dict[str, Any]:
        """Teacher ids, projector weights and optimiser state (the learner is saved apart)."""
        return {
            "teachers": self.teacher_ids,
            "projectors": self.projectors.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`.

        Raises:
            ValueError: the saved state is for other teachers.
        """
        if list(state["teachers"]) != self.teacher_ids:
            raise ValueError(
                f"saved pool distillation is for {state['teachers']}, not {self.teacher_ids}"
            )
        self.projectors.load_state_dict(state["projectors"])
        self.optimizer.load_state_dict(state["optimizer"])
