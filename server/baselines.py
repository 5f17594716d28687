"""Baselines of FREE, run in the same code and evaluated with the same protocol.

- **Random**: a freshly initialised meta-learner, no meta-training.
- **Average**: element-wise mean of the weights of the pool's teachers whose spec equals
  the meta-learner's (FedAvg of the same-architecture clients; the "Average" baseline of
  the data-free meta-learning papers, e.g. FREE's Table 1).
- **Scratch**: per-model from-scratch inversion (a fresh generator per teacher,
  ``inversion.scratch_steps`` Adam steps, as in BiDf-MKD/TGR) followed by the same
  meta-learning as FREE: a :class:`~server.free_training.FreeTrainer` whose inverter is
  :class:`ScratchInverter`.
- **No alignment** and **hard labels**: FREE with ``meta_learner.alignment=False`` or
  ``meta_learner.hard_labels=True`` (the FREE helper's config switches).

The real-data MAML ceiling (not data-free) is ``scripts.bench.reference.train_maml``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor, nn

from free_common.config import FreeConfig
from free_common.data.base import ClassImages
from free_common.free.inversion import MetaGeneratorInverter, Recovered
from free_common.free.scratch_inversion import invert_from_scratch
from free_common.free.teachers import Teacher, TeacherSource
from free_common.models import Classifier, ModelSpec, build_model
from server.free_training import FreeTrainer

__all__ = [
    "FREE_VARIANTS",
    "BaselineError",
    "ScratchInverter",
    "average_teachers",
    "free_trainer",
    "random_initialisation",
    "variant_config",
]

logger = logging.getLogger(__name__)

FREE_VARIANTS: tuple[str, ...] = ("free", "no_alignment", "hard_labels", "scratch")
"""Methods that run the FREE training loop: FREE itself, two ablations, scratch inversion."""


class BaselineError(ValueError):
    """An unknown variant, or no teacher that a baseline can use."""


def random_initialisation(spec: ModelSpec, seed: int) -> Classifier:
    """A batch-statistics model of ``spec`` initialised from ``seed`` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(spec, batch_stats=True).eval()


def average_teachers(teachers: Iterable[Teacher], spec: ModelSpec) -> tuple[Classifier, int]:
    """Element-wise mean of the weights of the teachers whose spec equals ``spec``.

    Teachers of another architecture, width, input or class count are skipped (FedAvg
    needs identical parameter shapes). Running BatchNorm statistics are dropped: the
    result uses batch statistics, like every meta-learner.

    Returns:
        ``(model, n_averaged)``.

    Raises:
        BaselineError: no teacher has ``spec``.
    """
    total: dict[str, Tensor] = {}
    count = 0
    for teacher in teachers:
        if teacher.spec != spec:
            continue
        for name, value in teacher.model.state_dict().items():
            if value.is_floating_point():
                acc = value.detach().to("cpu", torch.float64)
                total[name] = total[name] + acc if name in total else acc.clone()
        count += 1
    if count == 0:
        raise BaselineError(f"no teacher has the meta-learner's spec {spec}")
    model = build_model(spec, batch_stats=True)
    wanted = model.state_dict()
    missing = [k for k in wanted if k not in total]
    if missing:
        raise BaselineError(f"averaged weights lack {', '.join(missing)}")
    model.load_state_dict({k: (total[k] / count).to(wanted[k].dtype) for k in wanted})
    return model.eval(), count


def variant_config(config: FreeConfig, variant: str) -> FreeConfig:
    """``config`` switched to one of :data:`FREE_VARIANTS`.

    ``"scratch"`` keeps the config (its inversion is swapped by :func:`free_trainer`);
    ``"no_alignment"`` sets ``meta_learner.alignment=False``; ``"hard_labels"`` sets
    ``meta_learner.hard_labels=True``.
    """
    if variant in ("free", "scratch"):
        return config
    if variant == "no_alignment":
        return replace(config, meta_learner=replace(config.meta_learner, alignment=False))
    if variant == "hard_labels":
        return replace(config, meta_learner=replace(config.meta_learner, hard_labels=True))
    raise BaselineError(f"unknown variant {variant!r}: expected one of {', '.join(FREE_VARIANTS)}")


class ScratchInverter(MetaGeneratorInverter):
    """Drop-in inverter that inverts every teacher with a fresh generator (no meta-learning).

    Each call runs :func:`~free_common.free.scratch_inversion.invert_from_scratch` for
    ``config.scratch_steps`` steps per teacher; the inherited meta-generator is never
    used or updated (it only keeps the checkpoint format).
    """

    def invert(
        self,
        teachers: Sequence[Teacher],
        rng: torch.Generator,
        *,
        learner: nn.Module | None = None,
        adv_weight: float = 0.0,
    ) -> list[Recovered]:
        """One from-scratch inversion per teacher, in order."""
        return [
            invert_from_scratch(
                t, self.config, rng, learner=learner, adv_weight=adv_weight
            ).recovered
            for t in teachers
        ]


def free_trainer(
    config: FreeConfig,
    variant: str,
    teachers: TeacherSource,
    *,
    val_data: ClassImages,
    work_dir: Path,
    device: torch.device | str | None = None,
) -> FreeTrainer:
    """A :class:`FreeTrainer` for ``variant`` (no meta-test data: benches evaluate alike)."""
    trainer = FreeTrainer(
        variant_config(config, variant),
        teachers,
        val_data=val_data,
        test_data=None,
        work_dir=work_dir,
        device=device,
    )
    if variant == "scratch":
        trainer.inverter = ScratchInverter(config.inversion, trainer.device)
    return trainer
