"""Accuracy benchmark: FREE against every baseline, side by side in one run.

For each pool setting (single-architecture Conv4; multi-architecture Conv4 + ResNet-10 +
ResNet-18) and each seed, one process trains and meta-tests: FREE, FREE without
alignment, FREE with hard labels, from-scratch inversion + the same meta-learning
(``server.baselines``), Random, Average (FedAvg of the Conv4 teachers), and the real-data
MAML ceiling (``scripts.bench.reference.train_maml``, one model per shot). Model
selection uses meta-val only; every method is then evaluated once on the same meta-test
tasks (5-way, 15 queries, 10 fine-tuning steps at lr 0.01; ``free_common.evaluation``).

Pools: one per setting, pool seed 0, cached on disk and shared by every method and run
seed (the run seed changes the methods' initialisation and sampling and the meta-test
tasks, not the pool). Screening is off: the pools hold only honestly trained teachers.
The MAML ceiling does not depend on the pool: it is measured once per seed and shared by
the settings (from a finished unit of another setting when there is one).

Presets: ``smoke`` (wiring), ``quick`` (CI), ``full`` (the README's figures: every method
at FREE's 30-iteration budget) and ``long`` (FREE and its ablations 8x longer against
Random and Average; scratch inversion and the ceiling are left to ``full``).

Writes ``<out>/<stem>.json``, ``<stem>.md``, ``<stem>_val_curves.png`` and
``<stem>_recovered_images.png`` (stem ``accuracy``, or ``accuracy_long`` for ``long``);
prints FREE's margin over the best data-free baseline.
Usage: ``python -m scripts.bench.accuracy --preset quick``.

Modules: :mod:`.accuracy_presets` (methods, presets, result records), this one (training,
meta-testing, saved units, the command line) and :mod:`.accuracy_report` (aggregation and
the Markdown tables).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import itertools
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from free_common.data.base import ClassImages
from free_common.evaluation import evaluate, select_finetune_lr
from free_common.free.meta_learner import learner_spec
from free_common.free.teachers import InMemoryTeachers, Teacher
from free_common.models import Classifier
from free_common.runtime import host_record, pick_device
from scripts.bench import reference as bench_reference
from scripts.bench.accuracy_presets import (
    DATA_FREE_BASELINES,
    GOAL_POINTS,
    LABELS,
    METHODS,
    PRESETS,
    PUBLISHED_LR,
    Accuracies,
    AccuracyPreset,
    Ceiling,
    MetaTest,
    StateDicts,
    config_key,
    pool_settings,
)
from scripts.bench.accuracy_report import (
    _aggregate,
    _baselines_not_run,
    alignment_step,
    markdown,
)
from scripts.bench.teacher_pool import (
    DEFAULT_CACHE,
    build_pool,
    data_fingerprint,
    load_split,
    teachers_of,
)
from server.baselines import (
    BaselineError,
    average_teachers,
    free_trainer,
    random_initialisation,
)
from server.plots import save_curves, save_image_grid

__all__ = [
    "DATA_FREE_BASELINES",
    "GOAL_POINTS",
    "LABELS",
    "METHODS",
    "PRESETS",
    "PUBLISHED_LR",
    "AccuracyPreset",
    "alignment_step",
    "ceiling_key",
    "config_key",
    "main",
    "markdown",
    "pool_settings",
    "run",
    "val_curve",
]

logger = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"


def val_curve(history: Sequence[dict[str, Any]]) -> tuple[list[float], list[float]]:
    rows = [h for h in history if h.get("kind") == "val"]
    return [float(h["iteration"]) for h in rows], [float(h["val_accuracy"]) for h in rows]


def _recovered_grid(trainer: Any, teachers: Sequence[Teacher], per: int) -> list[Any]:
    """One recovered image per class for a few teachers, from the trained meta-generator."""
    inverter = copy.deepcopy(trainer.inverter)
    rng = torch.Generator().manual_seed(0)
    grid = []
    for teacher in teachers[:8]:
        task = inverter.invert([teacher], rng)[0]
        grid.append(
            (f"{teacher.teacher_id} {teacher.spec.arch} q={task.accuracy:.2f}", task.images[::per])
        )
    return grid


def _train_free_variants(
    preset: AccuracyPreset,
    setting: str,
    seed: int,
    teachers: list[Teacher],
    val: ClassImages,
    work_dir: Path,
) -> tuple[dict[str, Classifier], dict[str, Any], list[Any]]:
    models: dict[str, Classifier] = {}
    info: dict[str, Any] = {}
    grid: list[Any] = []
    config = replace(preset.free, seed=seed)
    for variant in preset.free_variants:
        started = time.perf_counter()
        trainer = free_trainer(
            config,
            variant,
            InMemoryTeachers(teachers),
            val_data=val,
            work_dir=work_dir / setting / f"seed{seed}" / variant,
        )
        result = trainer.train(progress=True)
        models[variant] = result.model
        iters, accs = val_curve(result.history)
        info[variant] = {
            "seconds": time.perf_counter() - started,
            "iterations": result.iterations_done,
            "best_iteration": result.best_iteration,
            "best_val": result.best_val,
            "inversion_seconds": result.inversion_seconds,
            "val_curve": {"iteration": iters, "accuracy": accs},
        }
        logger.info("%s seed %d %s: %s", setting, seed, variant, info[variant])
        if variant == "free":
            grid = _recovered_grid(trainer, teachers, config.inversion.images_per_class)
    return models, info, grid


def _measure_ceiling(
    preset: AccuracyPreset, data: tuple[ClassImages, ClassImages, ClassImages], seed: int
) -> Ceiling:
    """Train the real-data MAML ceiling (one model per shot) and meta-test it at ``seed``."""
    train, val, test = data
    models: dict[int, Classifier] = {}
    info: dict[str, Any] = {}
    for shot in preset.shots:
        run = bench_reference.train_maml(train, val, shot, preset.maml, seed)
        models[shot] = run.model
        info[str(shot)] = {
            "seconds": run.seconds,
            "best_iteration": run.best_iteration,
            "val_curve": {
                "iteration": [float(c[0]) for c in run.curve],
                "accuracy": [float(c[1]) for c in run.curve],
            },
        }
    results = _meta_test(preset, {"maml": models}, (val, test), seed)
    return Ceiling(results, info, _weights({"maml": models})["maml"])


def ceiling_key(preset: AccuracyPreset) -> str:
    """A short hash of what the ceiling's figures depend on besides the data and the seed."""
    sizes = {
        "maml": {**asdict(preset.maml), "iterations": sorted(preset.maml.iterations.items())},
        "shots": list(preset.shots),
        "test_tasks": preset.test_tasks,
        "dataset": preset.dataset,
    }
    return hashlib.sha256(json.dumps(sizes, sort_keys=True).encode()).hexdigest()[:10]


def _finished_ceiling(preset: AccuracyPreset, root: Path, seed: int, key: str) -> Ceiling | None:
    """The ceiling measured by a finished unit of any setting at ``seed``, or None.

    The ceiling never sees the pool: it trains on real meta-train data and is tested on
    the seed's meta-test tasks, the same for every setting, so one measurement serves all.
    """
    wanted = ceiling_key(preset)
    for setting in preset.settings:
        unit = _load_unit(_unit_dir(root, setting, seed), key)
        if unit and "maml" in unit["results"].tuned and unit.get("ceiling_key", wanted) == wanted:
            logger.info("seed %d: reusing the MAML ceiling measured for the %s pool", seed, setting)
            weights = _load_weights(_unit_dir(root, setting, seed)).get("maml", {})
            return Ceiling(unit["results"].only("maml"), unit["training"]["maml"], weights)
    return None


def _meta_test(
    preset: AccuracyPreset,
    models: dict[str, dict[int, Classifier]],
    data: tuple[ClassImages, ClassImages],
    seed: int,
) -> MetaTest:
    """Per method and shot, meta-test under both protocols on the seed's tasks.

    Published protocol: fine-tuning at :data:`PUBLISHED_LR`. Tuned protocol: the rate is
    chosen on meta-val (``preset.lr_val_tasks`` tasks of seed 20000 + seed, the same for
    every method) from ``preset.finetune_lrs``; meta-test then runs once at that rate (the
    published run is reused when the choice is :data:`PUBLISHED_LR`: same tasks, same rate).
    """
    val, test = data
    results = MetaTest({}, {}, {})
    for method, by_shot in models.items():
        for bucket in (results.fixed, results.tuned, results.lrs):
            bucket[method] = {}
        for shot, model in by_shot.items():
            fixed = _test_at(preset, (method, model), test, shot, seed, PUBLISHED_LR)
            chosen = select_finetune_lr(
                model,
                val,
                k_shot=shot,
                lrs=preset.finetune_lrs,
                n_tasks=preset.lr_val_tasks,
                seed=20_000 + seed,
            )
            tuned = (
                fixed
                if chosen.lr == PUBLISHED_LR
                else _test_at(preset, (method, model), test, shot, seed, chosen.lr)
            )
            results.fixed[method][shot], results.tuned[method][shot] = fixed, tuned
            results.lrs[method][shot] = {
                "lr": chosen.lr,
                "val": {str(lr): v for lr, v in chosen.val.items()},
                "at_edge": chosen.at_edge,
            }
            if chosen.at_edge:
                logger.warning(
                    "%s %d-shot: the chosen fine-tuning rate %g is at the edge of the grid %s",
                    method,
                    shot,
                    chosen.lr,
                    preset.finetune_lrs,
                )
    return results


def _test_at(
    preset: AccuracyPreset,
    named: tuple[str, Classifier],
    test: ClassImages,
    shot: int,
    seed: int,
    lr: float,
) -> np.ndarray:
    """Per-task meta-test accuracies of a (method, model) fine-tuned at ``lr`` (seed's tasks)."""
    method, model = named
    result = evaluate(
        model, test, k_shot=shot, n_tasks=preset.test_tasks, seed=10_000 + seed, lr=lr
    )
    logger.info("test %s %d-shot lr %g seed %d: %s", method, shot, lr, seed, result.format())
    return result.accuracies


def _weights(models: dict[str, dict[int, Classifier]]) -> StateDicts:
    """CPU copies of every meta-tested model's weights.

    A model that serves every shot is copied once, so ``torch.save`` stores it once.
    """
    copies: dict[int, dict[str, torch.Tensor]] = {}
    for by_shot in models.values():
        for model in by_shot.values():
            if id(model) not in copies:
                copies[id(model)] = {
                    k: v.detach().cpu().clone() for k, v in model.state_dict().items()
                }
    return {
        m: {shot: copies[id(model)] for shot, model in by_shot.items()}
        for m, by_shot in models.items()
    }


def _unit_dir(work_dir: Path, setting: str, seed: int) -> Path:
    return work_dir / setting / f"seed{seed}"


def _load_unit(path: Path, config_key: str) -> dict[str, Any] | None:
    """A finished (setting, seed) unit saved by :func:`_save_unit`, or None.

    A unit saved for another configuration (``config_key``: hash of the preset's FREE
    configuration) is ignored with a warning and measured again. The unit's results are
    under ``"results"`` (a :class:`MetaTest`; a unit measured before the tuned protocol
    has its published-protocol figures only).
    """
    done = path / "unit.json"
    if not done.is_file():
        return None
    unit: dict[str, Any] = json.loads(done.read_text())
    if unit.get("config_key", config_key) != config_key:
        logger.warning("%s was measured with another configuration: measuring again", done)
        return None
    tuned = unit.pop("tuned", {"accuracies": {}, "lrs": {}})
    unit["results"] = MetaTest(
        _arrays(unit.pop("accuracies")),
        _arrays(tuned["accuracies"]),
        {m: {int(k): v for k, v in by_shot.items()} for m, by_shot in tuned["lrs"].items()},
    )
    grid = path / "grid.pt"
    unit["grid"] = torch.load(grid, weights_only=True) if grid.is_file() else []
    return unit


def _arrays(saved: dict[str, dict[str, list[float]]]) -> Accuracies:
    return {
        m: {int(k): np.asarray(v, dtype=np.float64) for k, v in by_shot.items()}
        for m, by_shot in saved.items()
    }


def _lists(accuracies: Accuracies) -> dict[str, dict[str, list[float]]]:
    return {
        m: {str(k): v.tolist() for k, v in by_shot.items()} for m, by_shot in accuracies.items()
    }


def _differing_tasks(earlier: Accuracies, now: Accuracies) -> dict[str, dict[str, int]]:
    """Per method and shot both hold: the meta-test tasks whose accuracy changed."""
    return {
        m: {
            str(shot): int(np.sum(earlier[m][shot] != accs))
            for shot, accs in by_shot.items()
            if shot in earlier[m]
        }
        for m, by_shot in now.items()
        if m in earlier
    }


def _load_weights(path: Path) -> StateDicts:
    """The meta-tested models' weights of a unit (empty for units saved without them)."""
    file = path / "models.pt"
    return torch.load(file, weights_only=True) if file.is_file() else {}


def _save_unit(path: Path, unit: dict[str, Any]) -> None:
    """Write a finished unit atomically (the JSON last, so a partial write is not 'done').

    Besides ``unit.json`` (per-task accuracies of both protocols, the chosen rates, the
    training records) it keeps ``grid.pt`` (recovered images) and ``models.pt`` (the
    weights of every meta-tested model, so a later protocol can re-test without training).
    """
    path.mkdir(parents=True, exist_ok=True)
    torch.save(unit["grid"], path / "grid.pt")
    torch.save(unit["weights"], path / "models.pt")
    results: MetaTest = unit["results"]
    record = {k: v for k, v in unit.items() if k not in ("grid", "weights", "results")}
    record["accuracies"] = _lists(results.fixed)
    record["tuned"] = {
        "accuracies": _lists(results.tuned),
        "lrs": {m: {str(k): v for k, v in by_shot.items()} for m, by_shot in results.lrs.items()},
    }
    tmp = path / "unit.json.tmp"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path / "unit.json")


def _run_unit(
    preset: AccuracyPreset,
    name: str,
    run_seed: int,
    teachers: list[Teacher],
    spec: Any,
    data: tuple[ClassImages, ClassImages, ClassImages],
    ceiling: Ceiling | None,
    work_dir: Path,
) -> dict[str, Any]:
    """Train every method for one (setting, seed) and meta-test them on the same tasks."""
    _, val, test = data
    free_models, info, grid = _train_free_variants(preset, name, run_seed, teachers, val, work_dir)
    models = {m: dict.fromkeys(preset.shots, free_models[m]) for m in free_models}
    if "random" in preset.methods:
        models["random"] = dict.fromkeys(preset.shots, random_initialisation(spec, run_seed))
    averaged = 0
    if "average" in preset.methods:
        try:
            average, averaged = average_teachers(teachers, spec)
            models["average"] = dict.fromkeys(preset.shots, average)
        except BaselineError as err:
            logger.warning("%s: Average skipped: %s", name, err)
    results = _meta_test(preset, models, (val, test), run_seed)
    weights = _weights(models)
    if ceiling is not None:
        results.fixed["maml"] = ceiling.results.fixed["maml"]
        results.tuned["maml"] = ceiling.results.tuned["maml"]
        results.lrs["maml"] = ceiling.results.lrs["maml"]
        info["maml"] = ceiling.info
        weights["maml"] = ceiling.weights
    return {
        "results": results,
        "training": info,
        "average_teachers": averaged,
        "grid": [(label, images) for label, images in grid],
        "weights": weights,
    }


class NothingFinishedError(ValueError):
    """``--finished-only`` found no finished unit to report."""


def run(
    preset_name: str,
    out_dir: Path,
    seed: int,
    cache_dir: Path | None,
    only_seeds: Sequence[int] | None = None,
    units_dir: Path | None = None,
    only_settings: Sequence[str] | None = None,
    finished_only: bool = False,
    *,
    remeasure_untuned: bool = False,
) -> dict[str, Any]:
    """Train and evaluate every method; write JSON, markdown and plots; return the report.

    Each finished (setting, seed) unit is saved under the work directory and reused by a
    later call with the same preset, so a long ``full`` run can be stopped and resumed (a
    unit interrupted mid-training also resumes, from the FREE trainers' checkpoints).
    ``only_seeds`` restricts the run to some of the preset's seeds; the report then says
    how many seeds it aggregates. ``units_dir`` keeps the finished units somewhere else (a
    folder to commit or copy to another machine, so that seeds run on different machines
    add up to one report). ``only_settings`` restricts it to some pool settings. A pool is
    built (or loaded) only when one of its units needs training, and the MAML ceiling,
    which never sees the pool, is measured once per seed: a finished unit of another
    setting at the same seed supplies it. ``finished_only`` trains nothing: the report
    aggregates the finished units alone, each setting over its own seeds (a setting with
    none is left out and named as not run). ``remeasure_untuned`` measures again the
    finished units saved before the tuned protocol existed (they carry the published
    protocol's figures only); the new unit records, per method and shot, on how many
    meta-test tasks its published-protocol accuracy differs from the earlier unit's.
    """
    preset = PRESETS[preset_name]
    if finished_only and remeasure_untuned:
        raise ValueError("finished_only trains nothing: it cannot measure units again")
    seeds = tuple(seed + s for s in preset.seeds)
    if units_dir is not None:
        units_dir.mkdir(parents=True, exist_ok=True)
    if only_seeds is not None:
        unknown = sorted(set(only_seeds) - set(seeds))
        if unknown:
            raise ValueError(f"seeds {unknown} are not among the preset's seeds {list(seeds)}")
        seeds = tuple(s for s in seeds if s in only_seeds)
    started = time.perf_counter()
    train, val, test = (load_split(preset.dataset, s) for s in ("train", "val", "test"))
    data = (train, val, test)
    spec = learner_spec(preset.free.meta_learner)
    key = config_key(preset.free)
    root = cache_dir.parent / "bench-work" if cache_dir is not None else out_dir / "work"
    work_dir = root / f"accuracy-{preset_name}-{key}"
    logger.info("work directory (finished units are reused): %s", work_dir)
    ceilings: dict[int, Ceiling] = {}
    settings: list[dict[str, Any]] = []
    curves: dict[str, Any] = {}
    grids: list[Any] = []
    chosen = {n: a for n, a in preset.settings.items() if not only_settings or n in only_settings}
    for name, archs in chosen.items():
        pool = pool_settings(preset, name)
        teachers: list[Teacher] = []  # built (or loaded) only if a unit needs training
        per_seed: dict[int, Accuracies] = {}
        per_seed_tuned: dict[int, Accuracies] = {}
        chosen_lrs: dict[str, Any] = {}
        training: dict[int, Any] = {}
        averaged = 0
        for run_seed in seeds:
            unit_dir = _unit_dir(units_dir or work_dir, name, run_seed)
            unit = _load_unit(unit_dir, key)
            earlier = None
            if unit is not None and remeasure_untuned and not unit["results"].tuned:
                logger.info(
                    "%s seed %d: saved before the tuned protocol: measuring again", name, run_seed
                )
                earlier, unit = unit, None
            if unit is None and finished_only:
                logger.info("%s seed %d: not finished, left out (--finished-only)", name, run_seed)
                continue
            if unit is None:
                if not teachers:
                    teachers = teachers_of(build_pool(train, pool, cache_dir=cache_dir))
                if "maml" in preset.methods and run_seed not in ceilings:
                    found = _finished_ceiling(preset, units_dir or work_dir, run_seed, key)
                    ceilings[run_seed] = found or _measure_ceiling(preset, data, run_seed)
                unit = _run_unit(
                    preset, name, run_seed, teachers, spec, data, ceilings.get(run_seed), work_dir
                )
                record = {
                    "config_key": key,
                    "ceiling_key": ceiling_key(preset),
                    "free_config": preset.free.to_dict(),
                }
                if earlier is not None:
                    record["remeasured"] = _differing_tasks(
                        earlier["results"].fixed, unit["results"].fixed
                    )
                    logger.info(
                        "%s seed %d: tasks that differ from the earlier unit: %s",
                        name,
                        run_seed,
                        record["remeasured"],
                    )
                _save_unit(unit_dir, {**unit, **record})
            else:
                logger.info("%s seed %d: reusing the finished unit in %s", name, run_seed, unit_dir)
            results: MetaTest = unit["results"]
            per_seed[run_seed] = results.fixed
            if results.tuned:
                per_seed_tuned[run_seed] = results.tuned
                chosen_lrs[str(run_seed)] = {
                    m: {str(shot): c["lr"] for shot, c in by_shot.items()}
                    for m, by_shot in results.lrs.items()
                }
            training[run_seed] = unit["training"]
            averaged = unit["average_teachers"]
            if len(per_seed) == 1:  # the setting's first seed supplies grid and curves
                grids += [(f"{name}: {label}", images) for label, images in unit["grid"]]
                for variant in preset.free_variants:
                    c = unit["training"][variant]["val_curve"]
                    curves[f"{name} {LABELS[variant]}"] = (c["iteration"], c["accuracy"])
        if not per_seed:
            continue
        settings.append(
            {
                "name": name,
                "seeds": sorted(per_seed),
                "archs": list(archs),
                "teachers": preset.teachers,
                "average_teachers": averaged,
                "results": _aggregate(per_seed, preset.shots),
                "training": {str(k): v for k, v in training.items()},
            }
        )
        if per_seed_tuned:
            settings[-1]["tuned"] = {
                "seeds": sorted(per_seed_tuned),
                "results": _aggregate(per_seed_tuned, preset.shots),
                "lrs": chosen_lrs,
            }
    if not settings:
        raise NothingFinishedError(
            f"no finished unit of the {preset_name!r} preset under {units_dir or work_dir}: "
            "nothing to report (run without --finished-only to train them)"
        )
    first_seeds = ", ".join(sorted({str(s["seeds"][0]) for s in settings}))
    report: dict[str, Any] = {
        "benchmark": "accuracy",
        "preset": preset_name,
        "note": preset.note,
        "dataset": preset.dataset,
        "data_fingerprint": data_fingerprint(train),
        "seeds": sorted({s for setting in settings for s in setting["seeds"]}),
        "preset_seeds": [seed + s for s in preset.seeds],
        "preset_settings": list(preset.settings),
        "shots": list(preset.shots),
        "methods": list(preset.methods),
        "test_tasks": preset.test_tasks,
        "finetune_lrs": list(preset.finetune_lrs),
        "lr_val_tasks": preset.lr_val_tasks,
        "settings": settings,
        "free_config": preset.free.to_dict(),
        "maml": {
            **asdict(preset.maml),
            "iterations": {str(k): v for k, v in preset.maml.iterations.items()},
        },
        "pool_seed": 0,
        "pool_epochs": preset.pool_epochs,
        "seconds": time.perf_counter() - started,
        **host_record(pick_device()),
        "load_average_end": os.getloadavg()[0],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{preset.stem}.json").write_text(json.dumps(report, indent=2))
    (out_dir / f"{preset.stem}.md").write_text(markdown(report))
    save_curves(
        curves,
        out_dir / f"{preset.stem}_val_curves.png",
        xlabel="FREE iteration",
        ylabel="meta-val accuracy (mean over shots)",
        title=f"Meta-val accuracy during training (seed {first_seeds})",
    )
    if grids:
        save_image_grid(
            grids,
            out_dir / f"{preset.stem}_recovered_images.png",
            per_row=5,
            title="FREE: recovered images, one per class, per teacher",
        )
    return report


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--preset smoke|quick|full``, ``--out``, ``--seed``, ``--cache-dir``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--seed", type=int, default=0, help="offset added to the preset's seeds")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="run only these of the preset's seeds (finished ones are reused anyway)",
    )
    parser.add_argument(
        "--settings", nargs="+", default=None, help="run only these pool settings (single, multi)"
    )
    parser.add_argument(
        "--finished-only",
        action="store_true",
        help="train nothing: report the finished units only, each setting over its own seeds",
    )
    parser.add_argument(
        "--remeasure-untuned",
        action="store_true",
        help="measure again the finished units saved before the tuned protocol existed "
        "(each records on how many tasks its published-protocol figures changed)",
    )
    parser.add_argument(
        "--units",
        type=Path,
        default=None,
        help="folder of finished (setting, seed) units to reuse and extend "
        "(default: the work directory under the cache)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    planned = {args.seed + s for s in PRESETS[args.preset].seeds}
    if args.seeds is not None and not set(args.seeds) <= planned:
        parser.error(f"--seeds {args.seeds}: the preset's seeds are {sorted(planned)}")
    known = list(PRESETS[args.preset].settings)
    if args.settings is not None and not set(args.settings) <= set(known):
        parser.error(f"--settings {args.settings}: the preset's settings are {known}")
    if args.finished_only and args.remeasure_untuned:
        parser.error(
            "--finished-only trains nothing: it cannot be combined with --remeasure-untuned"
        )
    try:
        report = run(
            args.preset,
            args.out,
            args.seed,
            args.cache_dir,
            args.seeds,
            args.units,
            args.settings,
            args.finished_only,
            remeasure_untuned=args.remeasure_untuned,
        )
    except NothingFinishedError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    not_run = _baselines_not_run(report)
    caveat = f"; baselines not run: {', '.join(not_run)}" if not_run else ""
    for setting in report["settings"]:
        protocols = [("", setting["results"])]
        if "tuned" in setting:
            protocols.append((" (rates tuned on meta-val)", setting["tuned"]["results"]))
        for (protocol, results), shot in itertools.product(protocols, report["shots"]):
            s = results[str(shot)]["_summary"]
            free = results[str(shot)]["free"]
            print(
                f"{setting['name']} {shot}-shot{protocol}: FREE {100 * free['mean']:.2f} ± "
                f"{100 * free['ci95']:.2f} | FREE − best data-free baseline "
                f"({s['best_data_free_baseline']}) = {s['free_minus_best_baseline_points']:+.2f} "
                f"points (goal +{GOAL_POINTS}: {'met' if s['goal_met'] else 'NOT met'}"
                f"{caveat})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
