"""FREE configuration: frozen dataclasses, named presets and the Flower run-config mapping.

Presets (``free_common/free/README.md`` lists every deviation from the paper):

- ``"xkd-cpu"`` (the shipped default): FREE's meta-generator and memory bank with the
  meta-learner trained by cross-teacher distillation (``cross_distillation.py``) instead
  of the published own-task KD step and MAML replay, sized for minutes on two CPU cores.
- ``"xkd"``: the same algorithm at the published sizes (GPU servers).
- ``"paper"``: the published algorithm and hyperparameters (paper and supplement A/B):
  generator width 64, latent 256, 4 teachers x 100 images, k = 5, 999 iterations,
  second-order MAML replay with patience 10, 600 evaluation tasks.
- ``"paper-cpu"``: the published algorithm sized for two CPU cores (narrower generator,
  fewer images, iterations and evaluation tasks).
- ``"test"``: tiny sizes for unit and integration tests.

:meth:`FreeConfig.from_run_config` maps Flower's flat run config (``"free.iterations"``,
``"free.inversion.inner-steps"``, ...; kebab-case, scalar values) onto a preset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

__all__ = [
    "CrossDistillConfig",
    "DEFAULT_PRESET",
    "PRESETS",
    "ConfigError",
    "EvalConfig",
    "FreeConfig",
    "InversionConfig",
    "MemoryConfig",
    "POOL_KD_CHOICES",
    "PoolDistillConfig",
    "MetaLearnerConfig",
    "ReplayConfig",
    "ScreeningConfig",
]

PRESETS: tuple[str, ...] = ("xkd-cpu", "xkd", "paper", "paper-cpu", "test")
DEFAULT_PRESET = "xkd-cpu"


class ConfigError(ValueError):
    """An unknown key, a value of the wrong type or a value out of range."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class InversionConfig:
    """Task recovery by the meta-generator (FREE's FIVE, paper Sec. 4.1, Eq. 1).

    Attributes:
        latent_dim: size of the Gaussian latent z (d_z, 256 in the paper).
        generator_width: nf of the supplement's Table 1 (64 in the paper).
        image_size: side of the generated images; resized per teacher (bilinear).
        channels: channels of the generated images; converted per teacher.
        inner_steps: k, Adam steps that adapt a clone of the meta-generator to a teacher.
        images_per_class: m, generated images per teacher class (20 in the paper).
        generator_lr: inner Adam learning rate of the cloned generator.
        latent_lr: inner Adam learning rate of the latent batch.
        outer_lr: learning rate of the meta-generator's persistent outer Adam.
        betas: Adam betas, inner and outer.
        ce_weight: weight of the teacher's cross-entropy on the target labels.
        adv_weight: weight of the adversarial (teacher/learner disagreement) term; used
            only after warm-up, as published.
        bn_weight: weight of the DeepInversion BatchNorm-statistics term (0 in FREE).
        crop_padding: padding of the differentiable random crop.
        horizontal_flip: random horizontal flips (off: glyphs are not mirror-symmetric).
        batched: one generator forward for all teachers of an iteration (stacked clone
            parameters via ``torch.func``); False runs the teachers one after another.
        scratch_steps: steps of the per-model from-scratch baseline (BiDf-MKD/TGR: 200).
    """

    latent_dim: int = 256
    generator_width: int = 64
    image_size: int = 32
    channels: int = 1
    inner_steps: int = 5
    images_per_class: int = 20
    generator_lr: float = 1e-3
    latent_lr: float = 1e-3
    outer_lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    ce_weight: float = 1.0
    adv_weight: float = 1.0
    bn_weight: float = 0.0
    crop_padding: int = 4
    horizontal_flip: bool = False
    batched: bool = False
    scratch_steps: int = 200

    def __post_init__(self) -> None:
        """Validate ranges."""
        _require(self.latent_dim >= 1, f"inversion.latent_dim must be >= 1: {self.latent_dim}")
        _require(self.generator_width >= 1, "inversion.generator_width must be >= 1")
        _require(
            self.image_size >= 8 and self.image_size % 4 == 0,
            f"inversion.image_size must be a multiple of 4 and >= 8: {self.image_size}",
        )
        _require(self.channels in (1, 3), f"inversion.channels must be 1 or 3: {self.channels}")
        _require(self.inner_steps >= 1, f"inversion.inner_steps must be >= 1: {self.inner_steps}")
        _require(self.images_per_class >= 1, "inversion.images_per_class must be >= 1")
        _require(self.scratch_steps >= 1, "inversion.scratch_steps must be >= 1")
        _require(self.crop_padding >= 0, "inversion.crop_padding must be >= 0")
        for name in ("generator_lr", "latent_lr", "outer_lr"):
            _require(getattr(self, name) > 0, f"inversion.{name} must be positive")
        for name in ("ce_weight", "adv_weight", "bn_weight"):
            _require(getattr(self, name) >= 0, f"inversion.{name} must be >= 0")
        _require(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            f"inversion.betas must be two numbers in [0, 1): {self.betas}",
        )


@dataclass(frozen=True)
class MetaLearnerConfig:
    """The meta-learner and its KD + implicit gradient alignment update (paper Sec. 4.2, Eq. 3).

    Attributes:
        arch: meta-learner architecture (``ModelSpec.arch``).
        width: its base number of filters (Conv4: 32).
        image_size: its input side.
        channels: its input channels.
        n_way: outputs of its head (every episode is labelled 0..n_way-1).
        temperature: KD temperature T (losses are scaled by T**2).
        alignment: sequential inner steps across teachers on a clone, then a Reptile-style
            outer step (the paper's implicit gradient alignment). False: the same teachers'
            KD losses summed and stepped jointly at phi (the ablation).
        hard_labels: cross-entropy on the generator's target labels instead of KD.
        own_task_kd: run this update at all (the published step: each sampled teacher
            distilled on its own recovered images through the shared head). False leaves
            the meta-learner to ``cross_kd`` and the replay.
        init: ``"random"`` (published) or ``"best_teacher"``: start from the backbone of
            the pool model of the learner's own architecture that scores best on meta-val
            (nearest centroid, ``init_val_tasks`` tasks); the start is then a candidate of
            model selection, so training is kept only where it helps on meta-val.
        init_val_tasks: meta-val tasks per candidate of ``init="best_teacher"``.
        inner_optimizer: ``"adam"`` (published) or ``"sgd"`` for the clone's steps.
        inner_lr: learning rate of the clone's steps (1e-3).
        outer_lr: the meta-learner's Adam learning rate, shared with the replay (1e-3).
        reptile_scale: the outer gradient is ``(phi - phi') * reptile_scale`` (published 67).
    """

    arch: str = "conv4"
    width: int = 32
    image_size: int = 32
    channels: int = 1
    n_way: int = 5
    temperature: float = 1.0
    alignment: bool = True
    hard_labels: bool = False
    own_task_kd: bool = True
    init: str = "random"
    init_val_tasks: int = 40
    inner_optimizer: str = "adam"
    inner_lr: float = 1e-3
    outer_lr: float = 1e-3
    reptile_scale: float = 67.0

    def __post_init__(self) -> None:
        """Validate ranges."""
        _require(self.width >= 1, f"meta_learner.width must be >= 1: {self.width}")
        _require(self.image_size >= 8, f"meta_learner.image_size must be >= 8: {self.image_size}")
        _require(self.channels in (1, 3), "meta_learner.channels must be 1 or 3")
        _require(self.n_way >= 2, f"meta_learner.n_way must be >= 2: {self.n_way}")
        _require(self.temperature > 0, "meta_learner.temperature must be positive")
        _require(
            self.inner_optimizer in ("adam", "sgd"),
            f"meta_learner.inner_optimizer must be 'adam' or 'sgd': {self.inner_optimizer!r}",
        )
        for name in ("inner_lr", "outer_lr", "reptile_scale"):
            _require(getattr(self, name) > 0, f"meta_learner.{name} must be positive")
        _require(
            self.init in ("random", "best_teacher"),
            f"meta_learner.init must be 'random' or 'best_teacher': {self.init!r}",
        )
        _require(self.init_val_tasks >= 1, "meta_learner.init_val_tasks must be >= 1")


@dataclass(frozen=True)
class ReplayConfig:
    """Cross-task replay: MAML on N-way tasks sampled from the memory bank (paper Sec. 4.3).

    Attributes:
        enabled: run the replay after each post-warm-up iteration.
        n_way: classes per replay task.
        k_shot: support images per class.
        q_query: query images per class.
        meta_batch: tasks per meta-update (10).
        inner_steps: MAML inner SGD steps (5).
        inner_lr: MAML inner learning rate (0.01).
        first_order: first-order MAML instead of second order.
        patience: stop after this many consecutive meta-batches that fail to raise the
            best mean query accuracy of the current replay phase (10).
        max_meta_batches: hard cap on meta-batches per replay phase; 0 = no cap (paper).
    """

    enabled: bool = True
    n_way: int = 5
    k_shot: int = 1
    q_query: int = 15
    meta_batch: int = 10
    inner_steps: int = 5
    inner_lr: float = 0.01
    first_order: bool = False
    patience: int = 10
    max_meta_batches: int = 0

    def __post_init__(self) -> None:
        """Validate ranges."""
        _require(self.n_way >= 2, f"replay.n_way must be >= 2: {self.n_way}")
        _require(self.k_shot >= 1 and self.q_query >= 1, "replay.k_shot/q_query must be >= 1")
        _require(self.meta_batch >= 1, "replay.meta_batch must be >= 1")
        _require(self.inner_steps >= 0, "replay.inner_steps must be >= 0")
        _require(self.inner_lr > 0, "replay.inner_lr must be positive")
        _require(self.patience >= 1, "replay.patience must be >= 1")
        _require(self.max_meta_batches >= 0, "replay.max_meta_batches must be >= 0")


@dataclass(frozen=True)
class CrossDistillConfig:
    """Cross-teacher distillation on memory-bank images (``free_common.free.cross_distillation``).

    Not in the paper: each update labels one batch of bank images with several teachers
    and fits one head per teacher on the meta-learner's features.

    Attributes:
        enabled: run ``steps`` updates after every post-warm-up iteration.
        steps: student updates per iteration.
        batch: bank images per update.
        teachers: teachers labelling each iteration's batches: the iteration's sampled
            teachers first, then others drawn uniformly from the accepted ones.
        temperature: KD temperature T (losses scaled by T**2).
        head_lr: Adam learning rate of the per-teacher heads.
        head_init: ``"ridge"``: a new head starts as the ridge-regression fit of the
            teacher's logits on the current features of its first batch, so a new teacher
            does not send large random-head gradients into features that are already
            good; ``"random"``: nn.Linear's default range.
    """

    enabled: bool = False
    steps: int = 10
    batch: int = 128
    teachers: int = 8
    temperature: float = 4.0
    head_lr: float = 1e-3
    head_init: str = "ridge"

    def __post_init__(self) -> None:
        """Validate ranges."""
        _require(self.steps >= 1, f"cross_kd.steps must be >= 1: {self.steps}")
        _require(self.batch >= 2, f"cross_kd.batch must be >= 2: {self.batch}")
        _require(self.teachers >= 1, f"cross_kd.teachers must be >= 1: {self.teachers}")
        _require(self.temperature > 0, "cross_kd.temperature must be positive")
        _require(self.head_lr > 0, "cross_kd.head_lr must be positive")
        _require(
            self.head_init in ("ridge", "random"),
            f"cross_kd.head_init must be 'ridge' or 'random': {self.head_init!r}",
        )


POOL_KD_CHOICES = ("same-input", "per-domain")
"""How the pool distillation stage chooses its teachers (:attr:`PoolDistillConfig.choose`)."""

TEACHER_PRECISIONS = ("auto", "float32", "bfloat16")
"""How the pool distillation stage's teachers compute their features
(:attr:`PoolDistillConfig.teacher_precision`) and how its learner trains
(:attr:`PoolDistillConfig.learner_precision`)."""


@dataclass(frozen=True)
class PoolDistillConfig:
    """Feature distillation of the best pool models after meta-training (``pool_distillation``).

    Not in the paper: once the meta-generator has filled the memory bank, the selected
    meta-learner learns to reproduce the features of the ``teachers`` pool models that
    classify meta-val tasks best by nearest centroid, on augmented bank images, through
    one linear projector per teacher (cosine loss). Meta-val is evaluated every
    ``eval_every`` steps and model selection keeps whichever model is best, the
    meta-trained one included.

    Attributes:
        enabled: run the stage once, after the last iteration.
        teachers: k, the pool models distilled (ranked on meta-val).
        steps: updates of the stage.
        batch: bank images per update.
        lr: Adam learning rate of the meta-learner and the projectors.
        shift: padding of the random crop (pixels of shift) applied to bank images.
        eval_every: meta-val evaluation every this many steps (and after the last).
        rank_tasks: meta-val tasks per candidate when ranking the pool.
        choose: how the stage's teachers are chosen. ``"per-domain"`` (default): every
            pool model is a candidate, its input converted (channels, size) as the
            inverter does; each domain of a multi-domain meta-val ranks every candidate on
            its own classes, and the k teachers are taken in turns from the domains'
            rankings (each domain's best, then each one's second, ...), so every domain
            has teachers that suit it; one domain: the k best of all. ``"same-input"``
            (the rule before, kept for comparison): among the pool models that take the
            learner's input, the k best on the whole meta-val. On a one-domain pool whose
            models all take the learner's input both choose the same teachers; on the
            100-teacher glyph + icon pool, per-domain scored 1.3 to 2.1 points higher on
            meta-val in each of 3 seeds (same-input distilled icon owners only).
        teacher_precision: the number format of the teachers' forward passes, which
            only compute the stage's targets (no gradient flows through a teacher):
            ``"bfloat16"`` (autocast), ``"float32"``, or ``"auto"`` (default):
            bfloat16 where the device computes it natively (a CUDA GPU with bf16, a CPU
            with AVX512-BF16 or AMX), else float32. The meta-learner and its projectors
            train in float32 unless ``learner_precision`` says otherwise. An execution
            setting, like the device: it is not part of a configuration's key (see
            :meth:`FreeConfig.to_dict`).
        learner_precision: the number format in which the meta-learner's and the
            projectors' forward and backward passes run during the stage: ``"float32"``
            (default here, the stage as it was first measured), ``"bfloat16"``
            (autocast: mixed precision, the weights, their Adam state and the loss stay
            float32) or ``"auto"`` (bfloat16 where native, as above). Unlike the
            teachers' format it changes the training trajectory, so a value other than
            float32 is part of the key.
    """

    enabled: bool = False
    teachers: int = 5
    steps: int = 1000
    batch: int = 128
    lr: float = 1e-3
    shift: int = 2
    eval_every: int = 200
    rank_tasks: int = 40
    choose: str = "per-domain"
    teacher_precision: str = "auto"
    learner_precision: str = "float32"

    def __post_init__(self) -> None:
        """Validate ranges."""
        _require(
            self.choose in POOL_KD_CHOICES,
            f"pool_kd.choose must be one of {', '.join(POOL_KD_CHOICES)}: {self.choose!r}",
        )
        _require(
            self.teacher_precision in TEACHER_PRECISIONS,
            f"pool_kd.teacher_precision must be one of {', '.join(TEACHER_PRECISIONS)}: "
            f"{self.teacher_precision!r}",
        )
        _require(
            self.learner_precision in TEACHER_PRECISIONS,
            f"pool_kd.learner_precision must be one of {', '.join(TEACHER_PRECISIONS)}: "
            f"{self.learner_precision!r}",
        )
        for name in ("teachers", "steps", "eval_every", "rank_tasks"):
            _require(
                getattr(self, name) >= 1, f"pool_kd.{name} must be >= 1: {getattr(self, name)}"
            )
        _require(self.batch >= 2, f"pool_kd.batch must be >= 2: {self.batch}")
        _require(self.lr > 0, f"pool_kd.lr must be positive: {self.lr}")
        _require(self.shift >= 0, f"pool_kd.shift must be >= 0: {self.shift}")


@dataclass(frozen=True)
class MemoryConfig:
    """The memory bank of recovered images (paper Sec. 4.3).

    Attributes:
        max_per_class: ring-buffer size of each class (published: 20 batches x 20 = 400).
        max_images: global cap; the oldest images of the largest class go first.
        dtype: storage type on CPU, ``"uint8"`` (as the published PNGs) or ``"float16"``.
    """

    max_per_class: int = 400
    max_images: int = 200_000
    dtype: str = "uint8"

    def __post_init__(self) -> None:
        """Validate ranges."""
        _require(self.max_per_class >= 1, "memory.max_per_class must be >= 1")
        _require(self.max_images >= self.max_per_class, "memory.max_images < max_per_class")
        _require(self.dtype in ("uint8", "float16"), f"memory.dtype unknown: {self.dtype!r}")


@dataclass(frozen=True)
class EvalConfig:
    """Meta-validation (model selection) and meta-test (final report).

    Attributes:
        every: evaluate on meta-val every this many iterations (and after the last one).
        val_tasks: meta-val tasks per evaluation.
        test_tasks: meta-test tasks of the final report (600).
        shots: support sizes evaluated; selection uses their mean accuracy.
        n_way: classes per evaluation task.
        q_query: query images per class.
        mode: adaptation rule passed to ``free_common.evaluation.evaluate`` (``"finetune"``:
            full-network SGD from the meta-learned initialisation, as published).
        seed: seed of the evaluation task samplers (the same tasks at every evaluation).
    """

    every: int = 20
    val_tasks: int = 600
    test_tasks: int = 600
    shots: tuple[int, ...] = (1, 5)
    n_way: int = 5
    q_query: int = 15
    mode: str = "finetune"
    seed: int = 0

    def __post_init__(self) -> None:
        """Validate ranges."""
        _require(self.every >= 1, f"eval.every must be >= 1: {self.every}")
        _require(self.val_tasks >= 1 and self.test_tasks >= 1, "eval task counts must be >= 1")
        _require(len(self.shots) >= 1 and min(self.shots) >= 1, "eval.shots must be >= 1")
        _require(self.n_way >= 2 and self.q_query >= 1, "eval.n_way >= 2 and q_query >= 1")


_FIRST_UNIT_CORRELATION = 0.85
"""``ScreeningConfig.max_unit_correlation`` when it was introduced (see ``to_dict``)."""
_TRIGGER_FIELDS = (
    "trigger_steps",
    "trigger_batch",
    "trigger_lr",
    "trigger_mask_weight",
    "min_trigger_flip",
    "min_trigger_patch",
    "trigger_refine_steps",
    "trigger_refine_below",
    "trigger_confirmations",
)
"""The trigger scan's ``ScreeningConfig`` fields, left out of ``to_dict`` while it is off."""


@dataclass(frozen=True)
class ScreeningConfig:
    """Teacher screening: who may be sampled (measured thresholds: ``server/README.md``).

    Every new teacher is measured once on probe images drawn from the meta-val split
    (``free_common.free.trust``): pixel-space recovery of each class, its outputs and its
    weight norm. It is excluded, with a recorded reason, when a check fails; checks
    against the rest of the pool (weight scale, near-duplicate outputs, agreement on
    shared class names) run again whenever teachers arrive.

    Attributes:
        enabled: screen new teachers before they can be sampled (off: every teacher that
            loads is used; the "no defences" setting of ``scripts/bench/poison.py``).
        steps: Adam steps of the pixel-space recovery.
        images_per_class: recovered images per class.
        min_accuracy: lowest accepted teacher accuracy on its recovered images.
        min_confidence: lowest accepted mean max-softmax probability on them.
        recovery_lr: Adam learning rate of the recovery (on pixel logits).
        probe_images: probe images drawn from the meta-val split.
        max_logit: largest accepted |logit| on the probe images: an honest icon
            ResNet-18 reached 1,165, a model-replacement attack scales weights far beyond
            (``server/README.md``, "The checks").
        max_top_class_share: largest accepted mean probability, over the probes, of the
            class the teacher favours most (1: it answers one class for everything).
        max_weight_ratio: largest accepted ratio of a teacher's weight norm to the median
            of the teachers with its spec (either way).
        min_peers: teachers of the same spec needed before the weight-scale check runs.
        max_weight_similarity: largest accepted cosine similarity of a teacher's weight
            sketch with that of a teacher of its spec accepted earlier.
        max_duplicate_correlation: output correlation (after matching outputs) with a
            teacher accepted earlier from which a teacher whose weights are unrelated is
            judged on its hidden units (kept and reported as suspected unless they match).
        max_unit_correlation: mean correlation of hidden units matched one to one with
            such a teacher's from which it is excluded as a copy with reordered units
            (honest main-job owners reach 0.72, copies with 0.1x noise 0.96 and more).
        min_label_correlation: lowest accepted mean correlation, over (shared class name,
            peer) pairs and the probes, of the teacher's output for a name with the peer's.
        min_label_margin: lowest accepted mean margin, over those pairs, by which the
            teacher's output for a name matches the peer's better than its other outputs.
        min_label_pairs: pairs needed before a failed agreement excludes (fewer: suspected).
        trigger_steps: Adam steps of the trigger scan (``free_common.free.trust.triggers``:
            the smallest mask and pattern that send the held-out probes to each class);
            0 skips the scan.
        trigger_batch: fitting probes per class and step of the scan.
        trigger_lr: Adam learning rate of the scan (on mask and pattern logits).
        trigger_mask_weight: weight of the mask's mean in the scan's loss.
        min_trigger_flip: share of the held-out probes a class's mask must flip to count.
        min_trigger_patch: smallest accepted patch through which one class is reached
            (``TriggerScan.patch``: the mask's share of the input's pixels over the share
            of its mass in its densest window; below: a backdoor trigger;
            ``scripts/results/trigger_scan.md``).
        trigger_refine_steps: further Adam steps of the scan for each class that looks
            like a shortcut after ``trigger_steps`` (0: none; scans from before this field
            ran none).
        trigger_refine_below: patch below which a class reached at ``min_trigger_flip`` is
            refined.
        trigger_confirmations: further scans (other seeds) while a scan finds a patch
            below ``min_trigger_patch``; the teacher is excluded only when every scan
            does (0: one scan; scans from before this field ran one).
    """

    enabled: bool = True
    steps: int = 10
    images_per_class: int = 8
    min_accuracy: float = 0.7
    min_confidence: float = 0.5
    recovery_lr: float = 0.5
    probe_images: int = 256
    max_logit: float = 20000.0
    max_top_class_share: float = 0.97
    max_weight_ratio: float = 2.0
    min_peers: int = 4
    max_weight_similarity: float = 0.5
    max_duplicate_correlation: float = 0.9
    max_unit_correlation: float = _FIRST_UNIT_CORRELATION
    min_label_correlation: float = 0.05
    min_label_margin: float = -0.15
    min_label_pairs: int = 3
    trigger_steps: int = 60
    trigger_batch: int = 8
    trigger_lr: float = 0.25
    trigger_mask_weight: float = 4.0
    min_trigger_flip: float = 0.9
    min_trigger_patch: float = 0.03
    trigger_refine_steps: int = 120
    trigger_refine_below: float = 0.1
    trigger_confirmations: int = 2

    def __post_init__(self) -> None:
        """Validate ranges."""
        _require(self.trigger_steps >= 0, "screening.trigger_steps must be >= 0 (0: no scan)")
        _require(self.trigger_batch >= 1, "screening.trigger_batch must be >= 1")
        _require(self.trigger_refine_steps >= 0, "screening.trigger_refine_steps must be >= 0")
        _require(self.trigger_confirmations >= 0, "screening.trigger_confirmations must be >= 0")
        _require(self.trigger_mask_weight >= 0, "screening.trigger_mask_weight must be >= 0")
        _require(self.steps >= 1 and self.images_per_class >= 1, "screening sizes must be >= 1")
        _require(self.probe_images >= 1, "screening.probe_images must be >= 1")
        _require(self.min_peers >= 1 and self.min_label_pairs >= 1, "peer counts must be >= 1")
        for name in ("min_label_correlation", "min_label_margin"):
            _require(-2 <= getattr(self, name) <= 1, f"screening.{name} must be in [-2, 1]")
        for name in ("recovery_lr", "max_logit", "trigger_lr"):
            _require(getattr(self, name) > 0, f"screening.{name} must be positive")
        _require(self.max_weight_ratio > 1, "screening.max_weight_ratio must be > 1")
        for name in (
            "min_accuracy",
            "min_confidence",
            "max_top_class_share",
            "max_weight_similarity",
            "max_duplicate_correlation",
            "max_unit_correlation",
            "min_trigger_flip",
            "min_trigger_patch",
            "trigger_refine_below",
        ):
            _require(0 <= getattr(self, name) <= 1, f"screening.{name} must be in [0, 1]")


_GROUPS: dict[str, type[Any]] = {
    "inversion": InversionConfig,
    "meta_learner": MetaLearnerConfig,
    "cross_kd": CrossDistillConfig,
    "pool_kd": PoolDistillConfig,
    "replay": ReplayConfig,
    "memory": MemoryConfig,
    "eval": EvalConfig,
    "screening": ScreeningConfig,
}


@dataclass(frozen=True)
class FreeConfig:
    """Everything one FREE run needs (paper Alg. 1).

    Attributes:
        iterations: outer iterations in total (published: 999).
        warmup: the first ``warmup`` iterations only meta-train the generator (no
            adversarial term, no memory bank, no meta-learner update).
        teachers_per_iteration: teachers sampled uniformly with replacement (4).
        seed: seeds model initialisation and every random draw of the run.
        checkpoint_every: write a checkpoint every this many iterations (and at the end).
        teacher_cache: teachers kept loaded (LRU) between iterations.
        inversion: the meta-generator.
        meta_learner: the meta-learner and its KD/alignment update.
        cross_kd: cross-teacher distillation on bank images (off in ``paper``).
        pool_kd: feature distillation of the best pool models after the last iteration
            (off in ``paper``).
        replay: the memory-bank MAML replay.
        memory: the memory bank.
        eval: evaluation and model selection.
        screening: teacher screening.
    """

    iterations: int = 999
    warmup: int = 19
    teachers_per_iteration: int = 4
    seed: int = 42
    checkpoint_every: int = 20
    teacher_cache: int = 8
    inversion: InversionConfig = field(default_factory=InversionConfig)
    meta_learner: MetaLearnerConfig = field(default_factory=MetaLearnerConfig)
    cross_kd: CrossDistillConfig = field(default_factory=CrossDistillConfig)
    pool_kd: PoolDistillConfig = field(default_factory=PoolDistillConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    screening: ScreeningConfig = field(default_factory=ScreeningConfig)

    def __post_init__(self) -> None:
        """Validate ranges and cross-group consistency."""
        _require(self.iterations >= 1, f"iterations must be >= 1: {self.iterations}")
        _require(self.warmup >= 0, f"warmup must be >= 0: {self.warmup}")
        _require(self.teachers_per_iteration >= 1, "teachers_per_iteration must be >= 1")
        _require(self.checkpoint_every >= 1, "checkpoint_every must be >= 1")
        _require(self.teacher_cache >= 1, "teacher_cache must be >= 1")
        _require(
            self.replay.n_way <= self.meta_learner.n_way,
            f"replay.n_way {self.replay.n_way} exceeds meta_learner.n_way "
            f"{self.meta_learner.n_way}",
        )
        _require(
            self.eval.n_way <= self.meta_learner.n_way,
            f"eval.n_way {self.eval.n_way} exceeds meta_learner.n_way {self.meta_learner.n_way}",
        )

    @classmethod
    def preset(cls, name: str) -> FreeConfig:
        """The named preset, one of :data:`PRESETS` (module docstring)."""
        builders: dict[str, Callable[[], FreeConfig]] = {
            "paper": cls,
            "paper-cpu": _paper_cpu_preset,
            "xkd": lambda: _cross_teacher(cls()),
            "xkd-cpu": _xkd_cpu_preset,
            "test": _test_preset,
        }
        if name not in builders:
            raise ConfigError(f"unknown preset {name!r}: expected one of {', '.join(PRESETS)}")
        config: FreeConfig = builders[name]()
        return config

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready nested dict (tuples become lists).

        The ``pool_kd`` group is left out while it is the default (off), its ``choose``
        while it is the default, and ``screening.max_unit_correlation`` while it holds
        its first value (0.85), so a configuration without them, and every key hashed
        from it by the benchmarks, reads as it did before they existed (another value of
        the last one re-keys); :meth:`from_dict` fills them back in. (On a multi-domain
        pool the default chooses other teachers than before: keys for such pools name the
        choice themselves.) ``pool_kd.teacher_precision`` is always left out: like the
        device and the thread count it changes results only in float rounding, so it does
        not re-key (units measured before it existed ran their teachers in float32).
        ``pool_kd.learner_precision`` is left out while it is float32 (the stage before it
        existed) and kept otherwise: it changes the training trajectory. The screening's
        trigger-scan fields are left out while the scan is off (``trigger_steps`` 0), and
        :meth:`from_dict` reads their absence as off: a configuration from before the scan
        existed reads, and resumes, as it ran.
        """
        result: dict[str, Any] = _jsonable(dataclasses.asdict(self))
        if replace(self.pool_kd, teacher_precision="auto") == PoolDistillConfig():
            del result["pool_kd"]
        else:
            del result["pool_kd"]["teacher_precision"]
            if self.pool_kd.choose == PoolDistillConfig.choose:
                del result["pool_kd"]["choose"]
            if self.pool_kd.learner_precision == PoolDistillConfig.learner_precision:
                del result["pool_kd"]["learner_precision"]
        if self.screening.max_unit_correlation == _FIRST_UNIT_CORRELATION:
            del result["screening"]["max_unit_correlation"]
        if self.screening.trigger_steps == 0:
            for name in _TRIGGER_FIELDS:
                del result["screening"][name]
        else:  # the settings that scans ran with before these fields: left out
            if self.screening.trigger_refine_steps == 0:
                del result["screening"]["trigger_refine_steps"]
                del result["screening"]["trigger_refine_below"]
            if self.screening.trigger_confirmations == 0:
                del result["screening"]["trigger_confirmations"]
        return result

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FreeConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        top: dict[str, Any] = {}
        for key, value in data.items():
            if key == "screening" and isinstance(value, dict):  # absent fields: ran without
                if "trigger_steps" not in value:
                    value = {**value, "trigger_steps": 0}
                else:
                    value = {"trigger_refine_steps": 0, "trigger_confirmations": 0, **value}
            if key in _GROUPS:
                top[key] = _build(_GROUPS[key], value, key)
            elif key in _field_names(cls):
                top[key] = value
            else:
                raise ConfigError(f"unknown config key {key!r}")
        config: FreeConfig = _build(cls, top, "free")
        return config

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> FreeConfig:
        """Build from Flower's flat run config.

        ``"free.preset"`` (or a top-level ``"preset"``) picks the base preset (default
        ``"cpu"``); ``"free.<field>"`` and ``"free.<group>.<field>"`` override it, with
        kebab-case names (``"free.replay.max-meta-batches"``). Tuple fields take a
        comma-separated string (``"free.eval.shots" = "1,5"``). Keys outside ``free.``
        belong to other components and are ignored.

        Raises:
            ConfigError: unknown ``free.`` key, wrong type or out-of-range value.
        """
        preset = run_config.get("free.preset", run_config.get("preset", DEFAULT_PRESET))
        if not isinstance(preset, str):
            raise ConfigError(f"preset must be a string, got {preset!r}")
        base = cls.preset(preset)
        top: dict[str, Any] = {}
        groups: dict[str, dict[str, Any]] = {}
        for key, value in run_config.items():
            if not key.startswith("free.") or key == "free.preset":
                continue
            parts = key[len("free.") :].replace("-", "_").split(".")
            if len(parts) == 1 and parts[0] in _field_names(cls) and parts[0] not in _GROUPS:
                top[parts[0]] = _coerce(base, parts[0], value, key)
            elif len(parts) == 2 and parts[0] in _GROUPS:
                group = getattr(base, parts[0])
                if parts[1] not in _field_names(type(group)):
                    raise ConfigError(f"unknown run-config key {key!r}")
                groups.setdefault(parts[0], {})[parts[1]] = _coerce(group, parts[1], value, key)
            else:
                raise ConfigError(f"unknown run-config key {key!r}")
        try:
            for name, overrides in groups.items():
                top[name] = replace(getattr(base, name), **overrides)
            return replace(base, **top)
        except TypeError as err:
            raise ConfigError(str(err)) from err


def _cross_teacher(base: FreeConfig) -> FreeConfig:
    """``base`` with the shipped meta-learner update: cross-teacher distillation.

    The published own-task KD step and the MAML replay are off, and so is the generator's
    adversarial term (it needs the published step's shared head); model selection uses
    nearest-centroid meta-val accuracy, which needs no fine-tuning rate. Each iteration
    inverts 20 teachers instead of 4 (inversion is the cheap half of an iteration here, and
    the distillation feeds on the bank's variety): on the 100-teacher Conv4 pool, at 60
    iterations, 4 teachers per iteration stayed below an untrained network's meta-val
    nearest-centroid accuracy, 20 rose well above it.
    """
    return replace(
        base,
        iterations=40,
        teachers_per_iteration=20,
        inversion=replace(base.inversion, adv_weight=0.0),
        meta_learner=replace(base.meta_learner, own_task_kd=False),
        cross_kd=CrossDistillConfig(enabled=True),
        pool_kd=PoolDistillConfig(enabled=True),
        replay=replace(base.replay, enabled=False),
        eval=replace(base.eval, mode="proto"),
    )


def _xkd_cpu_preset() -> FreeConfig:
    """Cross-teacher distillation and pool distillation sized for the main job on two CPU cores.

    Each iteration inverts 20 teachers instead of 4: inversion is the cheap half of an
    iteration here and the distillation feeds on the bank's variety (on the 100-teacher
    Conv4 pool at 60 iterations, 4 teachers per iteration stayed below an untrained
    network's meta-val nearest-centroid accuracy; 20 rose well above it). 10 iterations:
    on the main job's pools (seeds 0-2) the meta-val after the distillation stage was as
    high from iteration 10 as from iteration 20, and the 15-minute budget needs the 100 s
    (the page lists the runs; the 100-teacher benchmarks run 20). The time goes to the
    pool distillation stage: 2,000 steps, higher on meta-val than 1,000 in each of 3
    training seeds on the 100-teacher glyph pool.
    """
    base = _cross_teacher(_paper_cpu_preset())
    return replace(
        base,
        iterations=10,
        teachers_per_iteration=20,
        pool_kd=replace(base.pool_kd, steps=2000),
    )


def _paper_cpu_preset() -> FreeConfig:
    """Minutes on two CPU cores; every reduction is listed in the presets page."""
    return FreeConfig(
        iterations=60,
        warmup=5,
        checkpoint_every=10,
        inversion=InversionConfig(generator_width=16, images_per_class=10, scratch_steps=200),
        replay=ReplayConfig(q_query=5, meta_batch=4, patience=5, max_meta_batches=10),
        memory=MemoryConfig(max_per_class=100, max_images=50_000),
        eval=EvalConfig(every=20, val_tasks=50, test_tasks=600),
    )


def _test_preset() -> FreeConfig:
    """Tiny sizes for tests (16x16 images, widths 4-8)."""
    return FreeConfig(
        iterations=4,
        warmup=1,
        teachers_per_iteration=2,
        seed=0,
        checkpoint_every=1,
        teacher_cache=2,
        inversion=InversionConfig(
            latent_dim=16,
            generator_width=4,
            image_size=16,
            inner_steps=2,
            images_per_class=4,
            crop_padding=2,
            scratch_steps=5,
        ),
        meta_learner=MetaLearnerConfig(width=4, image_size=16),
        replay=ReplayConfig(
            n_way=3,
            k_shot=1,
            q_query=2,
            meta_batch=2,
            inner_steps=1,
            patience=2,
            max_meta_batches=3,
        ),
        memory=MemoryConfig(max_per_class=8, max_images=64),
        eval=EvalConfig(every=2, val_tasks=2, test_tasks=2, shots=(1,), n_way=3, q_query=2),
        screening=ScreeningConfig(
            steps=3,
            images_per_class=2,
            min_accuracy=0.0,
            min_confidence=0.0,
            probe_images=16,
            max_top_class_share=1.0,
            max_weight_similarity=1.0,
            max_duplicate_correlation=1.0,
            min_label_correlation=-2.0,
            min_label_margin=-2.0,
            trigger_steps=0,
        ),
    )


def _field_names(cls: type[Any]) -> set[str]:
    return {f.name for f in fields(cls)}


def _build(cls: type[Any], values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(values).__name__}")
    unknown = set(values) - _field_names(cls)
    if unknown:
        raise ConfigError(f"unknown {where} keys: {', '.join(sorted(unknown))}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**kwargs)


def _coerce(current: Any, name: str, value: Any, key: str) -> Any:
    """Convert a run-config scalar to the type of the current value of ``name``."""
    old = getattr(current, name)
    if isinstance(old, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be a boolean, got {value!r}")
        return value
    if isinstance(old, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if isinstance(old, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if isinstance(old, tuple):
        return _parse_tuple(old, value, key)
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}")
    return value


def _parse_tuple(old: tuple[Any, ...], value: Any, key: str) -> tuple[Any, ...]:
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a comma-separated string, got {value!r}")
    kind = float if old and isinstance(old[0], float) else int
    try:
        return tuple(kind(v) for v in value.split(",") if v.strip())
    except ValueError as err:
        raise ConfigError(f"{key}: cannot parse {value!r} as numbers") from err


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
