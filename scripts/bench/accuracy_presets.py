"""What the accuracy benchmark measures: its methods, presets and the records of a run.

:data:`PRESETS` sizes each run (``smoke``, ``quick``, ``full``, ``long``; see
``scripts/README.md``); :class:`MetaTest` and :class:`Ceiling` hold one unit's meta-test
results. Imported by :mod:`scripts.bench.accuracy` (the runner) and the studies that reuse
its pools and tasks.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from free_common.config import (
    EvalConfig,
    FreeConfig,
    InversionConfig,
    MetaLearnerConfig,
    ReplayConfig,
    ScreeningConfig,
)
from free_common.free.meta_learner import learner_spec
from scripts.bench import reference as bench_reference
from scripts.bench.teacher_pool import PoolSettings
from server.baselines import FREE_VARIANTS

__all__ = [
    "DATA_FREE_BASELINES",
    "GOAL_POINTS",
    "LABELS",
    "METHODS",
    "PRESETS",
    "PUBLISHED_LR",
    "AccuracyPreset",
    "Accuracies",
    "Ceiling",
    "MetaTest",
    "StateDicts",
    "BENCH_MAX_LOGIT",
    "DISABLED_SCREENING_KEY",
    "config_key",
    "key_form",
    "pool_settings",
]

METHODS: tuple[str, ...] = (
    "free",
    "random",
    "average",
    "scratch",
    "no_alignment",
    "hard_labels",
    "maml",
)
DATA_FREE_BASELINES: tuple[str, ...] = ("random", "average", "scratch")
GOAL_POINTS = 1.42
PUBLISHED_LR = 0.01
"""The published protocol's fine-tuning rate (10 SGD steps), the same for every method."""
LABELS = {
    "free": "FREE",
    "random": "Random",
    "average": "Average (FedAvg)",
    "scratch": "Scratch inversion + meta-learning",
    "no_alignment": "FREE w/o alignment",
    "hard_labels": "FREE, hard labels",
    "maml": "MAML on real data (ceiling)",
}


@dataclass(frozen=True)
class AccuracyPreset:
    """Sizes of one benchmark run.

    Attributes:
        dataset: ``"glyphs"`` or ``"synthetic"``.
        settings: pool setting name -> architectures (cycled over the teachers).
        teachers: teachers per pool.
        pool_epochs: local training epochs per teacher.
        seeds: run seeds.
        shots: meta-test support sizes.
        test_tasks: meta-test tasks per (method, shot, seed).
        free: base FREE configuration (its seed is replaced by the run seed).
        maml: the real-data MAML ceiling's sizes (``scripts.bench.reference.Preset``).
        note: what the preset is for (printed in the report).
        resnet_width: base width of the pools' ResNet teachers.
        methods: the methods this preset runs (a subset of :data:`METHODS`, FREE always);
            the report marks the others "not run".
        stem: output file names (``<stem>.json``, ``<stem>.md``, ``<stem>_*.png``).
        finetune_lrs: the second protocol's grid: each method's fine-tuning rate is chosen
            on meta-val from these, then meta-test runs once at the chosen rate.
        lr_val_tasks: meta-val tasks per candidate rate.
    """

    dataset: str
    settings: dict[str, tuple[str, ...]]
    teachers: int
    pool_epochs: int
    seeds: tuple[int, ...]
    shots: tuple[int, ...]
    test_tasks: int
    free: FreeConfig
    maml: bench_reference.Preset
    note: str
    resnet_width: int = 16
    methods: tuple[str, ...] = METHODS
    stem: str = "accuracy"
    finetune_lrs: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3)
    lr_val_tasks: int = 100

    def __post_init__(self) -> None:
        """Refuse unknown methods and a preset without FREE."""
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown or "free" not in self.methods:
            raise ValueError(
                f"methods {list(self.methods)}: must include 'free' and be among {list(METHODS)}"
            )

    @property
    def free_variants(self) -> tuple[str, ...]:
        """The methods of this preset that run the FREE training loop, in run order."""
        return tuple(v for v in FREE_VARIANTS if v in self.methods)


def _free_config(
    base: FreeConfig, *, iterations: int, warmup: int, every: int, val_tasks: int, scratch: int
) -> FreeConfig:
    """``base`` with the bench's iteration budget, meta-val size and screening off."""
    return replace(
        base,
        iterations=iterations,
        warmup=warmup,
        checkpoint_every=every,
        inversion=replace(base.inversion, scratch_steps=scratch),
        eval=replace(base.eval, every=every, val_tasks=val_tasks),
        screening=replace(base.screening, enabled=False),
    )


_SMOKE_FREE = FreeConfig(
    iterations=2,
    warmup=1,
    teachers_per_iteration=2,
    checkpoint_every=2,
    inversion=InversionConfig(
        latent_dim=16, generator_width=4, inner_steps=2, images_per_class=4, scratch_steps=4
    ),
    meta_learner=MetaLearnerConfig(width=4),
    replay=ReplayConfig(q_query=2, meta_batch=2, inner_steps=1, patience=1, max_meta_batches=2),
    eval=EvalConfig(every=2, val_tasks=2, test_tasks=2, q_query=15),
    screening=ScreeningConfig(enabled=False),
)
_CPU = FreeConfig.preset("paper-cpu")

Accuracies = dict[str, dict[int, np.ndarray]]
"""Method -> shot -> per-task meta-test accuracies, shape (test_tasks,)."""
StateDicts = dict[str, dict[int, dict[str, torch.Tensor]]]
"""Method -> shot -> the weights of the model meta-tested for that shot."""


@dataclass
class MetaTest:
    """Meta-test results of some methods under both protocols, on the same tasks.

    Attributes:
        fixed: the published protocol: every method fine-tuned at :data:`PUBLISHED_LR`.
        tuned: every method fine-tuned at its own rate, chosen on meta-val from the
            preset's ``finetune_lrs`` (empty for units measured before this protocol).
        lrs: method -> shot -> ``{"lr", "val": {rate: mean meta-val accuracy}, "at_edge"}``.
    """

    fixed: Accuracies
    tuned: Accuracies = field(default_factory=dict)
    lrs: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)

    def only(self, method: str) -> MetaTest:
        """The results of one method."""
        return MetaTest(
            {method: self.fixed[method]},
            {method: self.tuned[method]} if method in self.tuned else {},
            {method: self.lrs[method]} if method in self.lrs else {},
        )


@dataclass
class Ceiling:
    """The real-data MAML ceiling of one seed: results, training record, weights by shot."""

    results: MetaTest
    info: dict[str, Any]
    weights: dict[int, dict[str, torch.Tensor]]


_FULL = AccuracyPreset(
    dataset="glyphs",
    settings={"single": ("conv4",), "multi": ("conv4", "resnet10", "resnet18")},
    teachers=100,
    pool_epochs=30,
    seeds=(0, 1, 2),
    shots=(1, 5),
    test_tasks=600,
    free=_free_config(_CPU, iterations=30, warmup=5, every=10, val_tasks=50, scratch=200),
    maml=bench_reference.Preset(
        iterations={1: 200, 5: 150}, meta_batch=4, val_every=50, val_tasks=50, test_tasks=600
    ),
    note="FULL: 100-teacher pools, FREE 'cpu' preset cut to 30 iterations (5 warm-up), "
    "meta-val 50 tasks every 10 iterations, scratch 200 steps per teacher, MAML ceiling "
    "200/150 meta-batches of 4; protocol kept: 600 test tasks, 3 seeds.",
)

PRESETS: dict[str, AccuracyPreset] = {
    "smoke": AccuracyPreset(
        dataset="synthetic",
        settings={"single": ("conv4",), "multi": ("conv4", "resnet10")},
        teachers=3,
        pool_epochs=2,
        seeds=(0,),
        shots=(1, 5),
        test_tasks=3,
        free=_SMOKE_FREE,
        maml=bench_reference.Preset(
            iterations={1: 1, 5: 1}, meta_batch=1, val_every=1, val_tasks=2, test_tasks=2, width=4
        ),
        note="SMOKE: wiring check only; numbers are meaningless.",
        resnet_width=2,
        finetune_lrs=(0.01, 0.1),
        lr_val_tasks=2,
    ),
    "quick": AccuracyPreset(
        dataset="glyphs",
        settings={"single": ("conv4",), "multi": ("conv4", "resnet10", "resnet18")},
        teachers=12,
        pool_epochs=30,
        seeds=(0,),
        shots=(1, 5),
        test_tasks=30,
        free=replace(
            _free_config(_CPU, iterations=4, warmup=1, every=2, val_tasks=10, scratch=30),
            replay=replace(_CPU.replay, max_meta_batches=5),
        ),
        maml=bench_reference.Preset(
            iterations={1: 6, 5: 6}, meta_batch=2, val_every=3, val_tasks=10, test_tasks=30
        ),
        note="QUICK: CI-sized wiring run (12-teacher pools, 4 FREE iterations with at most 5 "
        "replay meta-batches, 30 test tasks, one seed); not the README figure.",
        finetune_lrs=(0.01, 0.1),
        lr_val_tasks=10,
    ),
    "full": _FULL,
    "long": replace(
        _FULL,
        free=_free_config(_CPU, iterations=240, warmup=5, every=40, val_tasks=50, scratch=200),
        note="LONG: the `full` pools and protocol with FREE and its ablations trained 8x "
        "longer (240 iterations, 5 warm-up, meta-val 50 tasks every 40 iterations), against "
        "Random and Average. Not run here: scratch inversion (at 240 iterations, 192,000 "
        "generator steps, about 3.5 CPU-hours per unit) and the MAML ceiling (it does not "
        "depend on FREE's budget); both are in `full`.",
        methods=("free", "random", "average", "no_alignment", "hard_labels"),
        stem="accuracy_long",
    ),
}


def pool_settings(preset: AccuracyPreset, setting: str) -> PoolSettings:
    """The teacher pool of one of ``preset``'s settings (Conv4 teachers at the learner's width)."""
    return PoolSettings(
        archs=preset.settings[setting],
        teachers=preset.teachers,
        epochs=preset.pool_epochs,
        conv4_width=learner_spec(preset.free.meta_learner).width,
        resnet_width=preset.resnet_width,
    )


BENCH_MAX_LOGIT = 1000.0
"""The logit limit the benchmarks screen with (free_wins, poison): their units' limit.

The app's limit, the ``ScreeningConfig`` default, is 20,000 since an honest icon ResNet-18
reached 1,165 (``server/README.md``, "The checks"). The honest teachers of the glyph
benchmark pools reach at most 242 (``scripts/results/screening.json``) and the poison
bench's scaled replacements 5.15e5 and more, but the glyph + icon pool and the other
attacked models were not measured between the two limits, so the benchmarks keep the
limit of their recorded units rather than claim their figures at the app's."""

DISABLED_SCREENING_KEY: dict[str, Any] = {
    "enabled": False,
    "steps": 10,
    "images_per_class": 8,
    "min_accuracy": 0.7,
    "min_confidence": 0.5,
    "recovery_lr": 0.5,
    "probe_images": 256,
    "max_logit": 1000.0,
    "max_top_class_share": 0.97,
    "max_weight_ratio": 2.0,
    "min_peers": 4,
    "max_weight_similarity": 0.5,
    "max_duplicate_correlation": 0.9,
    "min_label_correlation": 0.05,
    "min_label_margin": -0.15,
    "min_label_pairs": 3,
}
"""How unit keys name a screening that is switched off, whatever its thresholds.

The thresholds of a disabled screening change no figure, so a key must not depend on
them; this is the form the units recorded before 2026-12-07 were keyed with (the defaults
of that day, when the logit limit was 1,000), so that moving a default re-keys nothing."""


def key_form(config: FreeConfig) -> dict[str, Any]:
    """``config.to_dict()`` with a disabled screening in its one key form."""
    form = config.to_dict()
    if not config.screening.enabled:
        form["screening"] = dict(DISABLED_SCREENING_KEY)
    return form


def config_key(config: FreeConfig) -> str:
    """A short hash of ``config`` (10 hex digits) naming the work and unit it was measured by."""
    return hashlib.sha256(json.dumps(key_form(config), sort_keys=True).encode()).hexdigest()[:10]
