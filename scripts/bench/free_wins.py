"""Does FREE earn its place? FREE against what the pool gives for free, over training seeds.

Every method is meta-tested under the same three protocols on the same tasks
(:mod:`free_common.protocols`: ``tuned``, the headline, with each method's rate and head
start chosen on glyph meta-val; ``published``, lr 0.01; ``proto``, the device's nearest
centroid), in these settings: glyph meta-test 5-way and 20-way, 1-shot and 5-shot, and
Fashion-MNIST 5-way (cross-domain: every model saw glyphs only). The methods:

- ``free``: the shipped default preset (``xkd-cpu``) at :data:`XKD_ITERATIONS` meta-training
  iterations with a float32 stage learner (the preset when the units were measured), one
  model per training seed;
- the levers (:data:`POOL_KD_LEVERS`), the default with some pool distillation fields
  changed, each chosen or dropped on meta-val: ``free_kd1000`` (1,000 steps, the default
  until 2026-12-06), ``free_kd3000`` and ``free_kd4000`` (longer stages, each continued
  from a cached shorter run), and at 1,000 steps ``free_kd10`` (ten teachers) and
  ``free_same_input`` (teachers chosen by the earlier rule, ``pool_kd.choose =
  "same-input"``: only pool models that take the learner's input, ranked on the whole
  meta-val; differs from ``free_kd1000`` on multi-domain pools only, where it distils the
  RGB icon owners alone);
- ``free_paper``: the published algorithm (``paper-cpu``), one model per training seed;
- ``scratch``: from-scratch inversion (a fresh generator per teacher, ``scratch_steps``
  Adam steps as in BiDf-MKD/TGR) followed by the default's meta-learning (``xkd-cpu``), one
  model per training seed; a data-free baseline. At 20 teachers per iteration and 200
  steps each it costs about 20 times FREE's inversion per iteration (the
  accuracy-against-time study measured 240 s per iteration on one CPU thread): a job for
  a GPU or a long session;
- ``random``: the meta-learner untrained, initialised from the training seed;
- ``average``: the plain mean of the pool's models with the learner's spec (one model);
- ``best_owner``: the single pool model, of any architecture, whose features score best on
  meta-val by nearest centroid (one model), the baseline a practitioner tries first;
- ``ceiling``: not data-free, a reference above every method: the learner's architecture
  pre-trained on the real meta-train images of the pool's domains
  (:mod:`scripts.bench.ceiling`), one model per training seed; never a baseline of FREE's
  margin.

Baselines come from the same code as the main job's (:mod:`server.comparison`). Pools are
those of ``scripts.bench.accuracy`` (100 teachers, pool seed 0, cached on disk): ``single``
(Conv4) and ``multi`` (Conv4, ResNet-10, ResNet-18); and ``mixed``, the paper's
multi-domain setting: half the teachers are Conv4 glyph owners (grey), half Conv4 icon
owners (RGB), and the meta-learner is RGB. FREE inverts each teacher at its own input and
selects on the union of the two meta-val sets; each domain's settings (``glyphs-*``,
``icons-*``) are meta-tested on that domain's meta-test, at the learner's input, with the
tuned protocol's choice made on that domain's meta-val.

Resumable: one unit per (pool, method, seed, setting) under
``scripts/results/free_wins_units/<preset>/``, written when it finishes and never run again;
trained models are cached (``~/.cache/freefed/free_wins``), so an interrupted run resumes
where it stopped and a fresh clone retrains only what its units lack. The report
(``free_wins.json`` and ``.md``) is rebuilt from every finished unit: per pool, setting and
protocol, each method's mean over seeds, across-seed standard deviation, worst seed and
per-seed means, and FREE's margin over the best baseline, which holds only if every seed
beats that baseline.

Usage::

    python -m scripts.bench.free_wins --pools single --methods free,random --seeds 0,1,2
    python -m scripts.bench.free_wins --settings glyphs-5w1s,glyphs-5w5s
    python -m scripts.bench.free_wins --preset full --report   # rebuild the report only
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from free_common.config import ConfigError, FreeConfig
from free_common.data.base import ClassImages
from free_common.data.registry import load_split as load_dataset
from free_common.data.sources import DataSource
from free_common.free.meta_learner import learner_spec
from free_common.free.teachers import InMemoryTeachers, default_class_keys
from free_common.models import Classifier, ModelSpec, build_model
from free_common.protocols import PROTOCOLS, ProtocolSettings, TaskSetting, meta_test
from free_common.runtime import host_record, pick_device
from scripts.bench.accuracy_presets import BENCH_MAX_LOGIT, key_form
from scripts.bench.ceiling import CeilingSettings, pretrain_ceiling
from scripts.bench.teacher_pool import PoolSettings, build_pool, load_split, teachers_of
from server.baselines import free_trainer
from server.checkpoint import load_checkpoint
from server.comparison import (
    Candidate,
    average_candidate,
    best_owner_candidate,
    random_candidate,
)

__all__ = [
    "BASELINE_METHODS",
    "METHODS",
    "PRESETS",
    "SETTINGS",
    "WinsPreset",
    "baseline_candidate",
    "free_config",
    "main",
    "multidomain_markdown",
    "multidomain_report",
    "pool_settings",
    "pool_teachers",
    "report",
    "run_unit",
]

logger = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
CACHE_DIR = Path("~/.cache/freefed").expanduser()
"""Trained models go to ``<cache>/free_wins``, pools to ``<cache>/pools`` (shared with
``scripts.bench.accuracy``)."""
POOL_KD_LEVERS: dict[str, dict[str, Any]] = {
    "free_kd1000": {"steps": 1000},
    "free_same_input": {"choose": "same-input", "steps": 1000},
    "free_kd10": {"teachers": 10, "steps": 1000},
    "free_kd3000": {"steps": 3000},
    "free_kd4000": {"steps": 4000},
}
"""Levers: trained methods that are the default (``free``) with these ``pool_kd`` fields
changed; each is trained, named and counted as FREE like the default. The levers measured
against the 1,000-step default of 2026-12-05 keep its stage length, so that their units
stay comparable with ``free_kd1000``, that default's own units."""
METHODS: tuple[str, ...] = (
    "free",
    *POOL_KD_LEVERS,
    "free_paper",
    "scratch",
    "random",
    "average",
    "best_owner",
    "ceiling",
)
TRAINED = {
    "free": "xkd-cpu",
    **dict.fromkeys(POOL_KD_LEVERS, "xkd-cpu"),
    "free_paper": "paper-cpu",
    "scratch": "xkd-cpu",
}
"""Methods trained by FREE's loop, and their preset."""
XKD_ITERATIONS = 20
"""Meta-training iterations of the methods trained with ``xkd-cpu`` on the 100-teacher pools.

The preset's count when these units were measured. The preset itself runs 10 since
2026-12-07 (chosen on the 20-owner main job's meta-val, where its bank is full sooner);
a 100-teacher pool draws each teacher about 4 times in 20 iterations of 20 teachers.
Their pool distillation stage trains its learner in float32, as when they were measured,
whatever the preset's ``pool_kd.learner_precision``."""
VARIANTS = {
    "free": "free",
    **dict.fromkeys(POOL_KD_LEVERS, "free"),
    "free_paper": "free",
    "scratch": "scratch",
}
"""The FREE loop's variant of each trained method (``server.baselines.free_trainer``)."""
BASELINE_METHODS = ("random", "average", "best_owner")
"""The pool's free models: built, not trained (:func:`baseline_candidate`)."""
FREE_METHODS = ("free", *POOL_KD_LEVERS, "free_paper")
"""FREE itself; every other method but the :data:`REFERENCES` is a baseline of FREE's margin."""
MULTI_DOMAIN_ONLY = ("free_same_input",)
"""Methods that differ from ``free`` on multi-domain pools only: skipped on the others."""
REFERENCES = ("ceiling",)
"""Methods that see real meta-train images: shown beside FREE, never a baseline of its margin."""
CEILING = CeilingSettings()
"""How the real-data ceiling is trained."""
DETERMINISTIC = ("average", "best_owner")
"""Methods whose model does not depend on the training seed: measured once, as seed 0."""
SETTINGS: dict[str, tuple[str, TaskSetting]] = {
    "glyphs-5w1s": ("glyphs", TaskSetting(5, 1)),
    "glyphs-5w5s": ("glyphs", TaskSetting(5, 5)),
    "glyphs-20w1s": ("glyphs", TaskSetting(20, 1)),
    "glyphs-20w5s": ("glyphs", TaskSetting(20, 5)),
    "fashion-5w1s": ("fashion-mnist", TaskSetting(5, 1)),
    "fashion-5w5s": ("fashion-mnist", TaskSetting(5, 5)),
    "icons-5w1s": ("icons", TaskSetting(5, 1, 5)),
    "icons-5w5s": ("icons", TaskSetting(5, 5, 5)),
}
"""Setting name -> (meta-test dataset, task family). An icon class holds 10 to 13 images,
so icon tasks take 5 queries per class (5 shots and 5 queries fit every class)."""
POOLS: dict[str, tuple[str, ...]] = {
    "single": ("conv4",),
    "multi": ("conv4", "resnet10", "resnet18"),
    "mixed": ("conv4",),
}
"""Pool name -> architectures, cycled over each domain's teachers."""
POOL_DOMAINS: dict[str, tuple[str, ...]] = {"mixed": ("glyphs", "icons")}
"""Pools drawn from several domains (teachers dealt evenly, each at its domain's channels)."""
MIXED_CHANNELS = 3
"""The meta-learner's channels for a multi-domain pool (icons are RGB)."""
MIXED_QUERIES = 5
"""Query images per class of a multi-domain pool's meta-val tasks (FREE's selection, the best
owner's ranking): with 15, only glyph classes (20 images) could be drawn, not icon classes
(10 to 13), and the union's meta-val would be the glyphs' alone."""
POOL_SETTINGS: dict[str, tuple[str, ...]] = {
    "mixed": ("glyphs-5w1s", "glyphs-5w5s", "icons-5w1s", "icons-5w5s"),
}
"""The settings a pool runs when it is not the glyph pools' default list (each domain's own)."""
GOALS = {"glyphs-5w1s": 4.78, "glyphs-20w1s": 4.78, "glyphs-20w5s": 4.78, "glyphs-5w5s": 1.42}
"""Issue 15's goals: FREE's margin (points) over the best baseline under ``tuned``."""


@dataclass(frozen=True)
class WinsPreset:
    """Sizes of one run of the benchmark.

    Attributes:
        dataset: meta-train/val data of pools and training (``glyphs`` or ``synthetic``).
        teachers: teachers per pool.
        pool_epochs: each teacher's training epochs.
        protocols: :class:`ProtocolSettings` (test tasks, the tuned grid, meta-val tasks).
        tiny: train FREE at wiring sizes (the smoke preset), not as the presets ship.
        settings: the :data:`SETTINGS` this preset can run.
    """

    dataset: str
    teachers: int
    pool_epochs: int
    protocols: ProtocolSettings
    tiny: bool = False
    settings: tuple[str, ...] = tuple(s for s in SETTINGS if not s.startswith("icons"))


PRESETS: dict[str, WinsPreset] = {
    "smoke": WinsPreset(
        dataset="synthetic",
        teachers=3,
        pool_epochs=2,
        protocols=ProtocolSettings(
            test_tasks=3, val_tasks=2, lrs=(0.01, 0.1), heads=("zero", "proto")
        ),
        tiny=True,
        settings=("glyphs-5w1s", "glyphs-5w5s"),
    ),
    "full": WinsPreset(
        dataset="glyphs",
        teachers=100,
        pool_epochs=30,
        protocols=ProtocolSettings(
            test_tasks=600, val_tasks=50, lrs=(0.01, 0.03, 0.1, 0.3), heads=("zero", "proto")
        ),
    ),
}


def free_config(preset: WinsPreset, method: str, seed: int, pool: str = "single") -> FreeConfig:
    """The FREE configuration of a trained method at one training seed on ``pool``.

    A multi-domain pool's meta-learner is RGB (:data:`MIXED_CHANNELS`) and its meta-val
    tasks take :data:`MIXED_QUERIES` queries; the single-domain pools keep the preset's.
    Screening runs at the logit limit the units were measured at
    (:data:`scripts.bench.accuracy_presets.BENCH_MAX_LOGIT`), not the app's, and without
    the trigger scan, which came after them (the pools are honest).
    """
    config = FreeConfig.preset(TRAINED[method])
    if TRAINED[method] == "xkd-cpu":
        stage = replace(config.pool_kd, learner_precision="float32")
        config = replace(config, iterations=XKD_ITERATIONS, pool_kd=stage)
    screening = replace(config.screening, max_logit=BENCH_MAX_LOGIT, trigger_steps=0)
    config = replace(config, seed=seed, screening=screening)
    if method in POOL_KD_LEVERS:
        config = replace(config, pool_kd=replace(config.pool_kd, **POOL_KD_LEVERS[method]))
    if pool in POOL_DOMAINS:
        config = replace(
            config,
            meta_learner=replace(config.meta_learner, channels=MIXED_CHANNELS),
            eval=replace(config.eval, q_query=MIXED_QUERIES),
        )
    if not preset.tiny:
        return config
    return replace(  # the smoke preset: the method's own update at wiring sizes
        config,
        iterations=2,
        warmup=1,
        teachers_per_iteration=2,
        checkpoint_every=2,
        inversion=replace(
            config.inversion,
            latent_dim=16,
            generator_width=4,
            inner_steps=2,
            images_per_class=4,
            scratch_steps=2,
        ),
        meta_learner=replace(config.meta_learner, width=4),
        cross_kd=replace(config.cross_kd, steps=2, batch=8, teachers=2),
        pool_kd=replace(config.pool_kd, steps=4, batch=8, teachers=2, eval_every=2, rank_tasks=2),
        replay=replace(config.replay, q_query=2, meta_batch=2, inner_steps=1, max_meta_batches=2),
        eval=replace(config.eval, every=2, val_tasks=2),
        screening=replace(config.screening, enabled=False),
    )


def method_key(preset: WinsPreset, method: str, seed: int, pool: str = "single") -> str:
    """10 hex digits naming what determines ``method``'s model.

    That is its FREE config when trained, else the learner's spec. A unit measured under
    another key is measured again.
    """
    if method in TRAINED:
        config = free_config(preset, method, seed, pool)
        what = key_form(config)
        if pool in POOL_DOMAINS:  # where the default choice of distilled teachers changed
            what["pool_kd_choose"] = config.pool_kd.choose
    elif method == "ceiling":
        spec = learner_spec(free_config(preset, "free", seed, pool).meta_learner)
        what = {"spec": spec.to_json(), "ceiling": asdict(CEILING)}
    else:
        spec = learner_spec(free_config(preset, "free", seed, pool).meta_learner)
        what = {"spec": spec.to_json()}
    blob = json.dumps({"method": method, **what}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def _unit_path(root: Path, pool: str, method: str, seed: int, setting: str) -> Path:
    return root / pool / f"{method}-s{seed}" / f"{setting}.json"


def pool_teachers(preset: WinsPreset, pool: str, cache_dir: Path) -> InMemoryTeachers:
    """The pool's teachers; a multi-domain pool's are named ``<domain>-<id>``."""
    spec = learner_spec(free_config(preset, "free", 0).meta_learner)
    domains = POOL_DOMAINS.get(pool, (preset.dataset,))
    settings = PoolSettings(
        archs=POOLS[pool],
        teachers=max(1, preset.teachers // len(domains)),
        epochs=preset.pool_epochs,
        conv4_width=spec.width,
        **({"resnet_width": 2} if preset.dataset == "synthetic" else {}),
    )
    teachers = []
    for domain in domains:
        members = build_pool(
            _train_split(preset, domain), settings, cache_dir=cache_dir / "pools", progress=True
        )
        for t in teachers_of(members):
            if len(domains) > 1:
                name = f"{domain}-{t.teacher_id}"
                t = replace(
                    t, teacher_id=name, class_keys=default_class_keys(name, len(t.class_keys))
                )
            teachers.append(t)
    return InMemoryTeachers(teachers)


def _train_split(preset: WinsPreset, domain: str) -> ClassImages:
    """A domain's meta-train split at its native input (the pool's dataset for one domain)."""
    if domain in ("glyphs", "synthetic"):
        return load_split(domain, "train")
    return load_dataset(domain, "train")


def _pool_split(preset: WinsPreset, pool: str, split: str) -> ClassImages:
    """A split of the pool's domains at the learner's input.

    A multi-domain pool's is the union of its domains' splits (RGB, the learner's size);
    a one-domain pool's is its dataset's split as stored.
    """
    if pool not in POOL_DOMAINS:
        return load_split(preset.dataset, split)
    spec = learner_spec(free_config(preset, "free", 0, pool).meta_learner)
    mix = DataSource.parse("+".join(POOL_DOMAINS[pool])).load(
        split, image_size=spec.image_size, channels=spec.in_channels
    )
    assert mix is not None  # a mix of named domains is never the ``none`` source
    return mix


def _val_split(preset: WinsPreset, pool: str, cache: dict[Any, Any]) -> ClassImages:
    """What FREE selects on and best-owner ranks on: the pool's meta-val (:func:`_pool_split`)."""
    key = ("val", pool if pool in POOL_DOMAINS else preset.dataset)
    if key not in cache:
        cache[key] = _pool_split(preset, pool, "val")
    data: ClassImages = cache[key]
    return data


def _model(
    cache_dir: Path,
    preset_name: str,
    preset: WinsPreset,
    pool: str,
    method: str,
    seed: int,
    val: ClassImages,
    teachers: InMemoryTeachers,
) -> tuple[Classifier, dict[str, Any]]:
    """The model of ``method`` at ``seed`` (trained ones cached on disk) and what it is."""
    spec = learner_spec(free_config(preset, "free", seed, pool).meta_learner)
    if method in BASELINE_METHODS:
        cand = baseline_candidate(method, spec, seed, pool, val, teachers)
        if cand.model is None:
            raise RuntimeError(f"{method}: {cand.note}")
        return cand.model, {"note": cand.note}
    key = method_key(preset, method, seed, pool)
    work = cache_dir / "free_wins" / preset_name / pool / f"{method}-s{seed}-{key}"
    if method == "ceiling":
        return _ceiling(work, preset, pool, spec, seed)
    return _trained(work, preset, method, seed, val, teachers, pool)


def baseline_candidate(
    method: str,
    spec: ModelSpec,
    seed: int,
    pool: str,
    val: ClassImages,
    teachers: InMemoryTeachers,
) -> Candidate:
    """One of :data:`BASELINE_METHODS` as this bench builds it for the learner's ``spec``.

    ``random``: ``spec`` drawn at ``seed``; ``average``: the mean of the pool's models of
    ``spec``; ``best_owner``: the pool model whose features score best on 100 meta-val
    5-way 1-shot tasks.
    """
    if method == "random":
        return random_candidate(spec, seed)
    if method == "average":
        return average_candidate(teachers, spec)
    if method == "best_owner":
        queries = MIXED_QUERIES if pool in POOL_DOMAINS else 15
        return best_owner_candidate(
            teachers, val, None, n_way=5, k_shot=1, q_query=queries, n_tasks=100, seed=7
        )
    raise ValueError(f"{method!r} is not one of {BASELINE_METHODS}")


def _load_model(path: Path) -> tuple[Classifier, dict[str, Any]]:
    """A model saved by :func:`_trained` or :func:`_ceiling` (batch statistics, eval mode)."""
    saved = torch.load(path, weights_only=False)
    model = build_model(saved["spec"], batch_stats=True)
    model.load_state_dict(saved["state"])
    return model.eval(), saved["info"]


def _trained(
    work: Path,
    preset: WinsPreset,
    method: str,
    seed: int,
    val: ClassImages,
    teachers: InMemoryTeachers,
    pool: str,
) -> tuple[Classifier, dict[str, Any]]:
    config = free_config(preset, method, seed, pool)
    final = work / "model.pt"
    if final.is_file():
        return _load_model(final)
    earlier = _start_from_shorter_stage(
        work, method, config, lambda name: _sibling_run(preset, name, seed, pool)
    )
    t0 = time.perf_counter()
    trainer = free_trainer(config, VARIANTS[method], teachers, val_data=val, work_dir=work)
    result = trainer.train(progress=True)
    info = {
        "preset": TRAINED[method],
        "train_seconds": round(time.perf_counter() - t0 + earlier.get("train_seconds", 0.0), 1),
        **({"continued_from": earlier["run"]} if earlier else {}),
        "best_iteration": result.best_iteration,
        "best_val": result.best_val,
        "excluded": len(result.excluded),
        "distilled": result.pool_kd.get("teachers", []),
        "best_pool_kd_step": result.best_pool_kd_step,
    }
    torch.save({"spec": result.spec, "state": result.model.state_dict(), "info": info}, final)
    return result.model, info


SiblingRun = Callable[[str], tuple[FreeConfig, str] | None]
"""Method name -> the configuration that method trains with now, and the name of its run
directory (None for a method FREE's loop does not train)."""


def _sibling_run(
    preset: WinsPreset, method: str, seed: int, pool: str
) -> tuple[FreeConfig, str] | None:
    """What ``method`` trains at ``seed`` on ``pool`` now, and its run directory's name."""
    if method not in TRAINED:
        return None
    key = method_key(preset, method, seed, pool)
    return free_config(preset, method, seed, pool), f"{method}-s{seed}-{key}"


def _start_from_shorter_stage(
    work: Path, method: str, config: FreeConfig, sibling_run: SiblingRun
) -> dict[str, Any]:
    """Start ``work`` from a finished sibling run that stopped its distillation stage earlier.

    A sibling is a cached run of the same pool and seed and the same training variant whose
    method trains, by today's definition, the same configuration as ``config`` but for a
    smaller ``pool_kd.steps`` that is a multiple of the stage's ``eval_every``. Three things
    must agree: the sibling method's configuration (compared field by field, so a lever
    that chooses other teachers never qualifies), the run directory's name (its key, so the
    directory was trained under today's definition of that method), and the configuration
    stored in its checkpoint (read back with every field filled in). Its checkpoint holds
    the learner, the projectors, their optimiser and the random generators after its last
    step; a run continued from it evaluates and checkpoints at the same steps as one trained
    from the start, so it trains the same model (the trainer resumes bit-exactly) and only
    the extra steps cost time. The longest such sibling is used.

    Args:
        work: the run directory of ``method``.
        method: the method being trained.
        config: its configuration.
        sibling_run: :data:`SiblingRun` (:func:`_sibling_run` for the benchmark's pools).

    Returns:
        ``{"run": <sibling directory name>, "train_seconds": <its training time>}``, or
        ``{}`` when ``work`` already has a checkpoint or no sibling qualifies.
    """
    target = work / "checkpoints" / "latest.pt"
    if target.exists() or not config.pool_kd.enabled:
        return {}
    best: tuple[int, Path, dict[str, Any]] | None = None
    for saved in work.parent.glob(f"*-s{config.seed}-*/checkpoints/latest.pt"):
        run = saved.parent.parent
        sibling = run.name.rsplit("-", 2)[0]
        described = sibling_run(sibling)
        if described is None or VARIANTS.get(sibling) != VARIANTS[method]:
            continue
        sibling_config, run_name = described
        steps = sibling_config.pool_kd.steps
        if run.name != run_name or not (run / "model.pt").is_file():
            continue
        if _with_stage_steps(sibling_config, config.pool_kd.steps) != config:
            continue
        if steps >= config.pool_kd.steps or steps % config.pool_kd.eval_every:
            continue
        state = load_checkpoint(saved)
        if state is None or _stored_config(state) != sibling_config:
            continue
        if int(state["run"]["pool_kd"].get("steps_done", 0)) != steps:
            continue
        if best is None or steps > best[0]:
            info = torch.load(run / "model.pt", weights_only=False)["info"]
            best = (steps, saved, {"run": run.name, "train_seconds": info["train_seconds"]})
    if best is None:
        return {}
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(best[1], target)
    steps, _, earlier = best
    logger.info("%s: continues %s after its %d steps", work.name, earlier["run"], steps)
    return earlier


def _stored_config(state: dict[str, Any]) -> FreeConfig | None:
    """The configuration a checkpoint was trained with, every field filled in (None: unreadable)."""
    try:
        return FreeConfig.from_dict(state["config"])
    except ConfigError:
        return None


def _with_stage_steps(config: FreeConfig, steps: int) -> FreeConfig:
    """``config`` with ``pool_kd.steps`` set to ``steps``."""
    return replace(config, pool_kd=replace(config.pool_kd, steps=steps))


def _ceiling(
    work: Path, preset: WinsPreset, pool: str, spec: ModelSpec, seed: int
) -> tuple[Classifier, dict[str, Any]]:
    """The real-data ceiling at ``seed`` (cached in ``work``), trained on the pool's domains."""
    final = work / "model.pt"
    if final.is_file():
        return _load_model(final)
    domains = POOL_DOMAINS.get(pool, (preset.dataset,))
    train = _pool_split(preset, pool, "train")
    started = time.perf_counter()
    settings = CEILING if not preset.tiny else replace(CEILING, epochs=1)
    model, trained = pretrain_ceiling(train, spec, seed, settings, progress=True)
    info = {
        "note": f"pre-trained on the real meta-train images of {' + '.join(domains)}",
        "train_seconds": round(time.perf_counter() - started, 1),
        **trained,
    }
    work.mkdir(parents=True, exist_ok=True)
    torch.save({"spec": model.spec, "state": model.state_dict(), "info": info}, final)
    return model, info


def run_unit(
    preset_name: str,
    pool: str,
    method: str,
    seed: int,
    setting: str,
    *,
    root: Path,
    cache: dict[Any, Any],
    cache_dir: Path = CACHE_DIR,
    protocols: Sequence[str] = (),
) -> dict[str, Any]:
    """Measure one unit and write it under ``root``.

    A finished unit is reused; one that lacks some of ``protocols`` runs only those and
    keeps what it had (the tasks and the tuned grid are the same whatever runs).
    """
    path = _unit_path(root, pool, method, seed, setting)
    preset = PRESETS[preset_name]
    if setting not in pool_settings(preset, pool):
        raise ValueError(f"the {pool} pool does not run {setting}: {pool_settings(preset, pool)}")
    wanted = tuple(p for p in PROTOCOLS if p in (protocols or preset.protocols.protocols))
    key = method_key(preset, method, seed, pool)
    unit: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    if unit and unit.get("method_key") != key:
        logger.warning("%s was measured under another configuration: measuring again", path)
        unit = {}
    missing = tuple(p for p in wanted if p not in unit.get("protocols", {}))
    if not missing:
        return unit
    dataset, task = SETTINGS[setting]
    val = _val_split(preset, pool, cache)
    if ("pool", pool) not in cache:
        cache[("pool", pool)] = pool_teachers(preset, pool, cache_dir)
    if ("model", pool, method, seed) not in cache:
        cache[("model", pool, method, seed)] = _model(
            cache_dir, preset_name, preset, pool, method, seed, val, cache[("pool", pool)]
        )
    model, info = cache[("model", pool, method, seed)]
    test = _test_split(preset, dataset, cache, val.image_shape)
    choose_on = val.by_domain().get(dataset, val)  # a multi-domain pool: the domain's meta-val
    t0 = time.perf_counter()
    logger.info("unit %s/%s-s%d/%s: %s", pool, method, seed, setting, ", ".join(missing))
    settings = replace(preset.protocols, protocols=missing)
    results = meta_test(model, choose_on, test, task, settings, device=pick_device())
    unit = {
        "pool": pool,
        "method": method,
        "seed": seed,
        "setting": setting,
        "method_key": key,
        "task": asdict(task),
        "model": info,
        "protocols": {
            **unit.get("protocols", {}),
            **{k: v.to_dict() for k, v in results.items()},
        },
        "accuracies": {
            **unit.get("accuracies", {}),
            **{k: [round(float(a), 5) for a in v.accuracies] for k, v in results.items()},
        },
        "seconds": round(unit.get("seconds", 0.0) + time.perf_counter() - t0, 1),
        "host": host_record(pick_device()),
        "settings": {**asdict(preset.protocols), "protocols": None},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(unit, indent=1))
    tmp.replace(path)
    return unit


def pool_settings(preset: WinsPreset, pool: str) -> tuple[str, ...]:
    """The settings ``pool`` runs under ``preset`` (each domain's own for a multi-domain pool)."""
    return POOL_SETTINGS.get(pool, preset.settings)


def _test_split(
    preset: WinsPreset, dataset: str, cache: dict[Any, Any], shape: tuple[int, int, int]
) -> ClassImages:
    """``dataset``'s meta-test at the learner's input ``shape`` (C, H, W)."""
    key = ("test", dataset, shape)
    if key not in cache:
        if dataset == "glyphs" and shape[0] == 1:
            cache[key] = load_split(preset.dataset, "test")
        else:  # another domain, or glyphs for an RGB learner: at the learner's input
            cache[key] = load_dataset(dataset, "test", image_size=shape[1], channels=shape[0])
    data: ClassImages = cache[key]
    return data


PREVIOUS = "_previous"
"""Suffix of a method measured under an earlier configuration of itself (another key)."""


def report(root: Path) -> dict[str, Any]:
    """Aggregate every finished unit under ``root`` (see the module docstring).

    ``root`` is a preset's units folder. A unit whose ``method_key`` is not the method's
    key today (its preset changed since) is reported as ``<method>_previous``: kept
    visible, never FREE's figure and never a baseline of its margin.
    """
    units = [json.loads(p.read_text()) for p in sorted(root.glob("*/*/*.json"))]
    preset = PRESETS.get(root.name)
    table: dict[str, Any] = {}
    for u in units:
        method = u["method"]
        if preset is not None and u.get("method_key") != method_key(
            preset, method, u["seed"], u["pool"]
        ):
            method += PREVIOUS
        for protocol, r in u["protocols"].items():
            cell = table.setdefault(u["pool"], {}).setdefault(u["setting"], {})
            cell.setdefault(protocol, {}).setdefault(method, {})[str(u["seed"])] = {
                "mean": r["mean"],
                "ci95": r["ci95"],
                "lr": r["lr"],
                "head": r["head"],
            }
    out: dict[str, Any] = {}
    for pool, by_setting in table.items():
        for setting, by_protocol in by_setting.items():
            for protocol, by_method in by_protocol.items():
                out.setdefault(pool, {}).setdefault(setting, {})[protocol] = _summary(
                    setting, protocol, by_method
                )
    return {"units": len(units), "results": out}


def _summary(setting: str, protocol: str, by_method: dict[str, Any]) -> dict[str, Any]:
    methods: dict[str, Any] = {}
    for method, seeds in by_method.items():
        means = np.array([100 * s["mean"] for s in seeds.values()])
        methods[method] = {
            "mean": round(float(means.mean()), 2),
            "sd": round(float(means.std(ddof=1)), 2) if len(means) > 1 else 0.0,
            "worst": round(float(means.min()), 2),
            "seeds": {k: round(100 * v["mean"], 2) for k, v in seeds.items()},
            "ci95": round(float(np.mean([100 * s["ci95"] for s in seeds.values()])), 2),
            "deterministic": method in DETERMINISTIC,
        }
    summary: dict[str, Any] = {"methods": methods}
    baselines = {
        m: v
        for m, v in methods.items()
        if m not in (*FREE_METHODS, *REFERENCES) and not m.endswith(PREVIOUS)
    }
    if "free" in methods and baselines:
        best = max(baselines, key=lambda m: baselines[m]["mean"])
        free = methods["free"]
        summary["margin"] = {
            "best_baseline": best,
            "points": round(free["mean"] - baselines[best]["mean"], 2),
            "worst_seed_points": round(free["worst"] - baselines[best]["mean"], 2),
            "every_seed_beats": free["worst"] > baselines[best]["mean"],
            "seeds": len(free["seeds"]),
            "goal": GOALS.get(setting) if protocol == "tuned" else None,
        }
    return summary


_NAMES = {
    "free": "FREE (xkd-cpu)",
    "free_previous": "FREE, an earlier default (units whose configuration is no longer xkd-cpu)",
    "scratch_previous": "Scratch inversion + the previous default's meta-learning",
    "free_kd1000": "FREE, 1,000 pool distillation steps (the default until 2026-12-06)",
    "free_same_input": "FREE, 1,000 steps, distilling only owners with the learner's input",
    "free_kd10": "FREE, 1,000 steps, 10 pool distillation teachers instead of 5",
    "free_kd3000": "FREE, 3,000 pool distillation steps instead of 2,000",
    "free_kd4000": "FREE, 4,000 pool distillation steps instead of 2,000",
    "free_paper": "FREE as published (paper-cpu)",
    "scratch": "Scratch inversion + the same meta-learning",
    "random": "Random",
    "average": "Average",
    "best_owner": "Best single teacher",
    "ceiling": "Ceiling: pre-trained on real meta-train images (not data-free)",
}


_POOL_NAMES = {
    "single": "single pool (100 Conv4 glyph owners)",
    "multi": "multi-architecture pool (Conv4, ResNet-10, ResNet-18)",
    "mixed": "glyph + icon pool",
}


def headline(rep: dict[str, Any]) -> str:
    """One line for the README: FREE's margin over the best data-free baseline.

    Per pool (single, multi, mixed), under the tuned protocol and the prototype head (the
    device's path): each setting's FREE mean over seeds and its margin in points over the
    best baseline (named when it is not the best single teacher), marked ``goal met`` or
    ``goal not met`` where a goal applies, and ``a seed below`` when some seed does not
    beat that baseline; then the settings where FREE has no unit yet.
    """
    parts = []
    for pool in [p for p in POOLS if p in rep["results"]]:
        by_setting = rep["results"][pool]
        groups = []
        for protocol, name in (("tuned", "tuned"), ("proto", "prototype head")):
            cells, seeds, missing = [], set(), []
            for setting in [s for s in SETTINGS if s in by_setting]:
                cell = by_setting[setting].get(protocol, {})
                if "free" not in cell.get("methods", {}):
                    missing.append(setting)
                if "margin" not in cell:
                    continue
                margin, free = cell["margin"], cell["methods"]["free"]
                seeds.add(len(free["seeds"]))
                versus = margin["best_baseline"]
                who = "" if versus == "best_owner" else f" vs {_NAMES[versus].lower()}"
                cells.append(
                    f"{setting} {free['mean']:.1f} ({margin['points']:+.2f}{who}"
                    f"{_margin_verdict(margin)})"
                )
            if missing:
                cells.append(f"not yet measured: {', '.join(missing)}")
            if seeds:
                n = "/".join(str(k) for k in sorted(seeds))
                groups.append(f"{name} ({n} seeds) " + ", ".join(cells))
            elif missing:
                groups.append(f"{name}: FREE not yet measured")
        if groups:
            parts.append(f"{_POOL_NAMES.get(pool, pool)}: " + "; ".join(groups))
    if not parts:
        return "nothing measured yet."
    return (
        "FREE's mean and its margin in points over the best data-free baseline (the best "
        "single teacher unless named). " + ". ".join(parts) + "."
    )


def _margin_verdict(margin: dict[str, Any]) -> str:
    """``", a seed below"``, ``", goal met"``, ``", goal not met"`` or ``""`` (no goal)."""
    if not margin["every_seed_beats"]:
        return ", a seed below"
    goal = margin.get("goal")
    if not goal:
        return ""
    return ", goal met" if margin["points"] >= goal else ", goal not met"


def markdown(rep: dict[str, Any]) -> str:
    """One table per pool and protocol: methods x settings, mean ± across-seed sd (worst)."""
    lines = [
        "Mean over training seeds ± across-seed sd (worst seed) [mean per-task 95% CI], "
        f"from {rep['units']} units; `python -m scripts.bench.free_wins --report`.",
        "",
    ]
    for pool, by_setting in rep["results"].items():
        settings = [s for s in SETTINGS if s in by_setting]
        if pool in POOL_DOMAINS:
            lines += [
                f"**{pool} pool**: {' and '.join(POOL_DOMAINS[pool])} owners in equal numbers, "
                "RGB meta-learner; each setting on its own domain's meta-test, the tuned "
                "choice on that domain's meta-val.",
                "",
            ]
        for protocol in PROTOCOLS:
            if not any(protocol in by_setting[s] for s in settings):
                continue
            lines += [f"**{pool} pool, {protocol}**", ""]
            lines.append("| method | " + " | ".join(settings) + " |")
            lines.append("|---" * (len(settings) + 1) + "|")
            for method in [*METHODS, *(m + PREVIOUS for m in METHODS)]:
                cells = []
                for s in settings:
                    m = by_setting[s].get(protocol, {}).get("methods", {}).get(method)
                    if m is None:
                        cells.append("")
                        continue
                    n = len(m["seeds"])
                    spread = "" if m["deterministic"] else f" ± {m['sd']:.2f} ({m['worst']:.2f})"
                    cells.append(f"{m['mean']:.2f}{spread} [{m['ci95']:.2f}] n={n}")
                if any(cells):
                    lines.append(f"| {_NAMES.get(method, method)} | " + " | ".join(cells) + " |")
            margins = []
            for s in settings:
                mg = by_setting[s].get(protocol, {}).get("margin")
                if mg:
                    verdict = "every seed above" if mg["every_seed_beats"] else "NOT every seed"
                    goal = f", goal {mg['goal']:+.2f}" if mg["goal"] else ""
                    margins.append(
                        f"{s}: {mg['points']:+.2f} over {_NAMES[mg['best_baseline']]} "
                        f"({verdict}, {mg['seeds']} seeds{goal})"
                    )
            if margins:
                lines.append("")
                lines.append("FREE's margin: " + "; ".join(margins) + ".")
            lines.append("")
    return "\n".join(lines)


MULTIDOMAIN = ("free", "random", "average", "best_owner", "scratch", "ceiling")
"""The methods the multi-domain report asks for (issue 16); a missing one is named as such."""
MULTIDOMAIN_NOTES = {
    "scratch": "from-scratch inversion costs about 20 times FREE's per iteration (240 s per "
    "iteration on one CPU thread): a job for a GPU or a long session; "
    "`python -m scripts.bench.free_wins --pools mixed --methods scratch` measures it",
}


def multidomain_report(root: Path, rep: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The mixed pool's figures alone (``accuracy_multidomain``), or None when it has no unit.

    ``root`` is a preset's units folder; ``rep`` its :func:`report` when already built (it
    is built here otherwise). Methods of :data:`MULTIDOMAIN` without a unit are listed
    under ``not_measured`` with the reason, never left out silently.
    """
    units = list((root / "mixed").glob("*/*.json"))
    if not units:
        return None
    results = (rep or report(root))["results"].get("mixed", {})
    seen = {m for cell in results.values() for p in cell.values() for m in p["methods"]}
    return {
        "preset": root.name,
        "pool": "mixed",
        "domains": list(POOL_DOMAINS["mixed"]),
        "units": len(units),
        "results": {"mixed": results},
        "not_measured": {
            m: MULTIDOMAIN_NOTES.get(m, "no unit yet") for m in MULTIDOMAIN if m not in seen
        },
    }


def multidomain_markdown(rep: dict[str, Any]) -> str:
    """The mixed pool's tables, then what was not measured and why."""
    lines = [
        "**Multi-domain pool**, the paper's multi-domain setting: 50 Conv4 glyph owners (grey) "
        "and 50 Conv4 icon owners (RGB) "
        "(5 classes each), one RGB meta-learner; FREE inverts each teacher at its own input. "
        "Each domain is meta-tested on its own meta-test classes; the tuned protocol's rate "
        "and head start are chosen on that domain's meta-val. Written by "
        "`python -m scripts.bench.free_wins --pools mixed`.",
        "",
        markdown(rep),
    ]
    if rep["not_measured"]:
        lines += ["Not measured:", ""]
        lines += [f"- {_NAMES.get(m, m)}: {why}." for m, why in rep["not_measured"].items()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected missing units, then rebuild the report from every finished one."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="full")
    p.add_argument("--pools", default="single")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--protocols", default=",".join(PROTOCOLS))
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    p.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="pools and trained models")
    p.add_argument("--report", action="store_true", help="only rebuild the report")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads (0: torch's choice; 1 when other processes share the cores: "
        "two threads on a busy 2-core host made fine-tuning 10x slower here)",
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    preset = PRESETS[args.preset]
    root = args.out / "free_wins_units" / args.preset
    stem = "free_wins" if args.preset == "full" else f"free_wins_{args.preset}"
    try:
        pools, methods = _words(args.pools, POOLS), _words(args.methods, METHODS)
        settings = _words(args.settings, SETTINGS)
        protocols = _words(args.protocols, PROTOCOLS)
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError as err:
        p.error(str(err))
    cache: dict[Any, Any] = {}
    if not args.report:
        for pool in pools:
            for method in methods:
                if method in MULTI_DOMAIN_ONLY and pool not in POOL_DOMAINS:
                    logger.info(
                        "%s is free itself on the one-domain %s pool: skipped", method, pool
                    )
                    continue
                for seed in [0] if method in DETERMINISTIC else seeds:
                    for setting in [s for s in settings if s in pool_settings(preset, pool)]:
                        run_unit(
                            args.preset,
                            pool,
                            method,
                            seed,
                            setting,
                            root=root,
                            cache=cache,
                            cache_dir=args.cache_dir,
                            protocols=protocols,
                        )
    rep = {"preset": args.preset, **report(root)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(rep, indent=1))
    (args.out / f"{stem}.md").write_text(markdown(rep) + "\n")
    (args.out / f"{stem}_headline.md").write_text(headline(rep) + "\n")
    multi = multidomain_report(root, rep) if args.preset == "full" else None
    if multi is not None:
        (args.out / "accuracy_multidomain.json").write_text(json.dumps(multi, indent=1))
        (args.out / "accuracy_multidomain.md").write_text(multidomain_markdown(multi))
    print(markdown(rep))
    return 0


def _words(text: str, known: Any) -> list[str]:
    words = [w.strip() for w in text.split(",") if w.strip()]
    unknown = [w for w in words if w not in known]
    if unknown or not words:
        raise ValueError(f"unknown {unknown or 'empty list'}: expected some of {', '.join(known)}")
    return words


if __name__ == "__main__":
    sys.exit(main())
