"""Alignment study: what the inner optimiser of FREE's gradient alignment does to the update.

FREE's meta-learner step (``free_common.free.meta_learner``) clones the learner, takes one
inner step per sampled teacher, and hands ``(phi - phi') * reptile_scale`` to the outer Adam,
which it shares with the memory-bank replay. As published the inner steps use a fresh Adam
(lr 1e-3), whose first step is ``lr * sign(g)`` whatever the size of ``g``. This study
trains FREE with several inner optimisers on one of the accuracy benchmark's pools
(``--setting``: the single-architecture Conv4 pool by default, or the multi-architecture
one), seed 0, against the no-alignment ablation, all on the same meta-test tasks, and
measures, at the untrained learner and on recovered tasks, the direction each arm hands the
outer Adam.

Arms: ``published`` (inner Adam 1e-3, scale 67), ``joint`` (the no-alignment ablation: the
KD losses summed, one outer step), and ``sgd_*`` (inner SGD at lr alpha with
``reptile_scale = 1 / alpha``, so the outer gradient is
``sum_i g_i - alpha * sum_{i<j} H_j g_i + O(alpha^2)`` (Theorem 1), on the joint gradient's
scale, with an alignment term that grows with alpha).

Budgets reuse the accuracy benchmark's presets (``full``: 30 iterations; ``long``: 240;
``smoke``: synthetic wiring). An arm whose configuration equals one of the benchmark's FREE
variants in its committed unit of the same budget is the same training: trained here it
must reproduce the unit's per-task accuracies (the report says whether it does); not yet
trained, it is taken from the unit instead (``--measure-bench-arms`` trains it anyway).

Writes ``<out>/<stem>.{json,md}`` and ``<stem>_val_curves.png`` (stem
``alignment_<budget>`` for the single pool, ``alignment_<budget>_<setting>`` for another);
finished arms are kept under ``--units`` (default ``scripts/results/alignment_units``), in
``<budget>/<setting>/<arm>.json``.
Usage: ``python -m scripts.studies.alignment --budget full [--setting multi]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from free_common.config import FreeConfig
from free_common.data.base import ClassImages
from free_common.evaluation import confidence_interval, evaluate
from free_common.free.errors import NonFiniteLossError
from free_common.free.meta_learner import (
    build_meta_learner,
    distill_batches,
    learner_spec,
    meta_learner_step,
)
from free_common.free.teachers import InMemoryTeachers, Teacher
from scripts.bench.accuracy import PRESETS, AccuracyPreset, config_key, pool_settings, val_curve
from scripts.bench.teacher_pool import DEFAULT_CACHE, build_pool, load_split, teachers_of
from server.baselines import free_trainer, variant_config
from server.plots import save_curves

__all__ = ["ARMS", "Arm", "arm_config", "outer_directions", "run", "main"]

logger = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
SEED = 0
SETTINGS = tuple(PRESETS["full"].settings)
"""The accuracy bench's pool settings (``single``, ``multi``); the first is the default."""
BENCH_METHODS = ("free", "no_alignment")
"""The accuracy bench's FREE variants an arm can coincide with."""
REFERENCES = {"random": "Random", "average": "Average (FedAvg)"}
"""Data-free baselines shown beside the arms, from the bench unit (they use no FREE config)."""


@dataclass(frozen=True)
class Arm:
    """One way of forming the meta-learner's outer gradient.

    Attributes:
        label: the name in the report.
        alignment: sequential inner steps on a clone (True) or the joint ablation.
        inner_optimizer: ``"adam"`` or ``"sgd"`` (ignored without alignment).
        inner_lr: the inner learning rate.
        reptile_scale: the outer gradient is ``(phi - phi') * reptile_scale``.
    """

    label: str
    alignment: bool = True
    inner_optimizer: str = "adam"
    inner_lr: float = 1e-3
    reptile_scale: float = 67.0


def _sgd(alpha: float) -> Arm:
    """Inner SGD at ``alpha`` with ``reptile_scale = 1 / alpha`` (the joint gradient's scale)."""
    return Arm(
        f"inner SGD {alpha:g}, scale 1/{alpha:g}",
        inner_optimizer="sgd",
        inner_lr=alpha,
        reptile_scale=1 / alpha,
    )


ARMS: dict[str, Arm] = {
    "published": Arm("FREE as published (inner Adam 1e-3, scale 67)"),
    "joint": Arm("FREE w/o alignment (joint KD step)", alignment=False),
    "sgd_0.015": _sgd(0.015),
    "sgd_0.1": _sgd(0.1),
    "sgd_0.5": _sgd(0.5),
}


def arm_config(base: FreeConfig, arm: Arm) -> FreeConfig:
    """``base`` with the arm's meta-learner step (seed :data:`SEED`)."""
    learner = replace(
        base.meta_learner,
        alignment=arm.alignment,
        inner_optimizer=arm.inner_optimizer,
        inner_lr=arm.inner_lr,
        reptile_scale=arm.reptile_scale,
    )
    return replace(base, seed=SEED, meta_learner=learner)


def _flat_grad(model: torch.nn.Module) -> Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def _cosine(a: Tensor, b: Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def outer_directions(
    base: FreeConfig, teachers: list[Teacher], val: ClassImages, work_dir: Path, draws: int
) -> dict[str, dict[str, float]]:
    """Per arm: what it hands the outer Adam at the untrained learner, over ``draws`` draws.

    The meta-generator is first warmed up as in training (``base.warmup`` iterations, no
    learner); each draw then recovers ``teachers_per_iteration`` tasks, and every arm forms
    its outer gradient from the same batches at the same learner. Reported (means over
    draws): ``cos_joint``, the cosine with the summed KD gradient ``sum_i g_i`` (the joint
    ablation's direction); ``cos_sign``, the cosine with ``sum_i sign(g_i)``; ``rms``, the
    gradient's root mean square (the scale the shared outer Adam sees).
    """
    warm = replace(base, seed=SEED, iterations=base.warmup, checkpoint_every=base.warmup)
    trainer = free_trainer(
        warm, "free", InMemoryTeachers(teachers), val_data=val, work_dir=work_dir / "warmup"
    )
    trainer.train(progress=False)
    rng = torch.Generator().manual_seed(SEED)
    learner = build_meta_learner(base.meta_learner)
    spec = learner_spec(base.meta_learner)
    sums = {n: {"cos_joint": 0.0, "cos_sign": 0.0, "rms": 0.0} for n in ARMS}
    for _ in range(draws):
        picks = torch.randint(len(teachers), (base.teachers_per_iteration,), generator=rng)
        chosen = [teachers[i] for i in picks.tolist()]
        recovered = trainer.inverter.invert(chosen, rng)
        batches = distill_batches(recovered, chosen, base.inversion, spec, rng)
        per_teacher = []
        for batch in batches:
            probe = copy.deepcopy(learner)
            joint = replace(base.meta_learner, alignment=False)
            meta_learner_step(probe, torch.optim.SGD(probe.parameters(), lr=0.0), [batch], joint)
            per_teacher.append(_flat_grad(probe))
        summed = torch.stack(per_teacher).sum(0)
        signs = torch.stack([g.sign() for g in per_teacher]).sum(0)
        for name, arm in ARMS.items():
            probe = copy.deepcopy(learner)
            config = arm_config(base, arm).meta_learner
            meta_learner_step(probe, torch.optim.SGD(probe.parameters(), lr=0.0), batches, config)
            grad = _flat_grad(probe)
            sums[name]["cos_joint"] += _cosine(grad, summed) / draws
            sums[name]["cos_sign"] += _cosine(grad, signs) / draws
            sums[name]["rms"] += float(grad.pow(2).mean().sqrt()) / draws
    return sums


def _train_arm(
    preset: AccuracyPreset,
    name: str,
    teachers: list[Teacher],
    val: ClassImages,
    test: ClassImages,
    work_dir: Path,
) -> dict[str, Any]:
    config = arm_config(preset.free, ARMS[name])
    variant = "free" if ARMS[name].alignment else "no_alignment"
    trainer = free_trainer(
        config, variant, InMemoryTeachers(teachers), val_data=val, work_dir=work_dir / name
    )
    started = time.perf_counter()
    try:
        result = trainer.train(progress=True)
    except NonFiniteLossError as err:
        logger.warning("arm %s diverged: %s", name, err)
        return {"config_key": config_key(config), "diverged": str(err)}
    seconds = time.perf_counter() - started
    accuracies = {}
    for shot in preset.shots:
        res = evaluate(
            result.model, test, k_shot=shot, n_tasks=preset.test_tasks, seed=10_000 + SEED
        )
        accuracies[str(shot)] = res.accuracies.tolist()
        logger.info("test %s %d-shot: %s", name, shot, res.format())
    return {
        "config_key": config_key(config),
        "seconds": seconds,
        "best_iteration": result.best_iteration,
        "best_val": result.best_val,
        "val_curve": dict(zip(("iteration", "accuracy"), val_curve(result.history), strict=True)),
        "accuracies": accuracies,
    }


def _load(path: Path, key: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    unit: dict[str, Any] = json.loads(path.read_text())
    if unit.get("config_key") != key:
        logger.warning("%s was measured with another configuration: measuring again", path)
        return None
    return unit


def _save(path: Path, unit: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(unit))
    os.replace(tmp, path)


def _bench_unit(budget: str, units: Path, setting: str) -> dict[str, Any] | None:
    """The accuracy bench's committed unit for this budget and pool setting (seed 0), if any.

    Its base FREE configuration (``free_config``) comes from the unit, or, for units saved
    before units carried it, from the bench report of the same configuration hash.
    """
    path = units.parent / "accuracy_units" / budget / setting / f"seed{SEED}" / "unit.json"
    if not path.is_file():
        return None
    unit: dict[str, Any] = json.loads(path.read_text())
    if "free_config" not in unit:
        report = units.parent / f"{PRESETS[budget].stem}.json"
        if report.is_file():
            config = json.loads(report.read_text()).get("free_config")
            if config is not None and config_key(FreeConfig.from_dict(config)) == unit.get(
                "config_key"
            ):
                unit["free_config"] = config
    return unit


def _bench_method(bench: dict[str, Any] | None, name: str, base: FreeConfig) -> str | None:
    """The bench method of ``bench`` that trained exactly arm ``name``'s configuration, if any.

    The bench's FREE variants (:data:`BENCH_METHODS`) run ``variant_config(bench base, method)``
    with the run seed; an arm whose configuration equals one of them is that method.
    """
    if bench is None or "free_config" not in bench:
        return None
    measured = replace(FreeConfig.from_dict(bench["free_config"]), seed=SEED)
    wanted = arm_config(base, ARMS[name])
    for method in BENCH_METHODS:
        if method in bench["accuracies"] and variant_config(measured, method) == wanted:
            return method
    return None


def _from_bench(bench: dict[str, Any] | None, name: str, base: FreeConfig) -> dict[str, Any] | None:
    """Arm ``name`` taken from a bench unit that trained exactly its configuration, or None.

    Seeded training is deterministic (arms trained here reproduce the bench's per-task
    results, see ``bench_match``), so retraining (about 20 minutes an arm at ``long``)
    would add nothing.
    """
    method = _bench_method(bench, name, base)
    if bench is None or method is None or method not in bench["training"]:
        return None
    training = bench["training"][method]
    return {
        "config_key": config_key(arm_config(base, ARMS[name])),
        "source": "accuracy bench unit",
        "seconds": training["seconds"],
        "best_iteration": training["best_iteration"],
        "best_val": training["best_val"],
        "val_curve": training["val_curve"],
        "accuracies": bench["accuracies"][method],
    }


def _bench_match(
    bench: dict[str, Any] | None, arms: dict[str, Any], base: FreeConfig
) -> dict[str, bool]:
    """For arms trained here that the bench also ran: are the per-task results identical?"""
    out = {}
    for name, arm in arms.items():
        method = _bench_method(bench, name, base)
        if bench is not None and method is not None and "source" not in arm and "accuracies" in arm:
            out[name] = arm["accuracies"] == bench["accuracies"][method]
    return out


def _references(bench: dict[str, Any] | None, shots: Sequence[int]) -> dict[str, Any]:
    """Random and Average on the same meta-test tasks, from the bench unit (if it has them)."""
    if bench is None:
        return {}
    measured = {
        m: {"accuracies": bench["accuracies"][m]} for m in REFERENCES if m in bench["accuracies"]
    }
    return _summaries(measured, shots)


def _summaries(arms: dict[str, Any], shots: Sequence[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, unit in arms.items():
        if "accuracies" not in unit:
            out[name] = {"diverged": unit.get("diverged", "not run")}
            continue
        row = {}
        for shot in shots:
            mean, ci = confidence_interval(np.asarray(unit["accuracies"][str(shot)]))
            row[str(shot)] = {"mean": mean, "ci95": ci}
        out[name] = row
    return out


def _cells(summary: dict[str, Any], shots: Sequence[int]) -> str:
    return " | ".join(
        f"{100 * summary[str(s)]['mean']:.2f} ± {100 * summary[str(s)]['ci95']:.2f}" for s in shots
    )


def markdown(report: dict[str, Any]) -> str:
    """The study's table (accuracy per arm and shot, outer-gradient direction per arm)."""
    shots = report["shots"]
    lines = [
        f"Alignment study, budget `{report['budget']}` ({report['iterations']} FREE iterations; "
        f"{report['setting']} pool of {report['teachers']} teachers, seed {report['seed']}, "
        f"{report['test_tasks']} meta-test tasks, the same tasks for every arm). Direction "
        f"columns: the outer gradient at the untrained learner, over {report['draws']} draws "
        f"of {report['teachers_per_iteration']} recovered tasks (cosine with the summed KD "
        "gradient, cosine with the sum of its per-teacher signs, RMS).",
        "",
        "| arm | "
        + " | ".join(f"{s}-shot" for s in shots)
        + " | best it. | train s | cos Σg | cos Σsign g | RMS |",
        "|---|" + "---:|" * (len(shots) + 5),
    ]
    for name, arm in report["arms"].items():
        d = report["directions"].get(name, {})
        direction = (
            f"{d['cos_joint']:.3f} | {d['cos_sign']:.3f} | {d['rms']:.2e}" if d else "– | – | –"
        )
        summary = report["results"][name]
        if "diverged" in summary:
            cells = " | ".join("diverged" for _ in shots)
            lines.append(f"| {arm['label']} | {cells} | – | – | {direction} |")
            continue
        cells = _cells(summary, shots)
        label = arm["label"] + (" (from the accuracy bench)" if "source" in arm else "")
        lines.append(
            f"| {label} | {cells} | {arm['best_iteration']} | {arm['seconds']:.0f} | {direction} |"
        )
    for method, summary in report.get("references", {}).items():
        cells = _cells(summary, shots)
        lines.append(
            f"| {REFERENCES[method]} (accuracy bench, same tasks) | {cells} | – | – | – | – | – |"
        )
    match = report.get("bench_match", {})
    if match:
        said = ", ".join(f"{k}: {'identical' if v else 'DIFFERENT'}" for k, v in match.items())
        lines += ["", f"Trained here against the accuracy bench's unit of this budget: {said}."]
    imported = [a["label"] for a in report["arms"].values() if "source" in a]
    if imported:
        lines += [
            "",
            "Taken from the accuracy bench's unit (same configuration and seed, not retrained): "
            + "; ".join(imported)
            + ".",
        ]
    return "\n".join(lines) + "\n"


def run(
    budget: str,
    arm_names: Sequence[str],
    out_dir: Path,
    units_dir: Path,
    cache_dir: Path | None,
    draws: int = 8,
    measure_bench_arms: bool = False,
    setting: str = SETTINGS[0],
) -> dict[str, Any]:
    """Train and meta-test each arm (reusing finished ones); write JSON, markdown, plot.

    An arm that the accuracy bench's unit of this budget and ``setting`` trained with
    exactly its configuration is taken from that unit, unless ``measure_bench_arms``.
    """
    preset = PRESETS[budget]
    if setting not in preset.settings:
        raise ValueError(f"setting {setting!r}: must be one of {list(preset.settings)}")
    train, val, test = (load_split(preset.dataset, s) for s in ("train", "val", "test"))
    teachers = teachers_of(build_pool(train, pool_settings(preset, setting), cache_dir=cache_dir))
    root = cache_dir.parent / "bench-work" if cache_dir is not None else out_dir / "work"
    work_dir = root / f"alignment-{budget}-{config_key(preset.free)}" / setting
    logger.info("work directory: %s", work_dir)
    bench = _bench_unit(budget, units_dir, setting)
    arms: dict[str, Any] = {}
    for name in arm_names:
        path = units_dir / budget / setting / f"{name}.json"
        unit = _load(path, config_key(arm_config(preset.free, ARMS[name])))
        if unit is None and not measure_bench_arms:
            unit = _from_bench(bench, name, preset.free)
        if unit is None:
            logger.info("arm %s: training (%s)", name, ARMS[name].label)
            unit = _train_arm(preset, name, teachers, val, test, work_dir)
            _save(path, unit)
        elif "source" in unit:
            logger.info("arm %s: taken from the accuracy bench's %s unit", name, budget)
        else:
            logger.info("arm %s: reusing %s", name, path)
        arms[name] = {"label": ARMS[name].label, **unit}
    directions = outer_directions(preset.free, teachers, val, work_dir, draws)
    report: dict[str, Any] = {
        "study": "alignment",
        "budget": budget,
        "iterations": preset.free.iterations,
        "setting": setting,
        "teachers": len(teachers),
        "teachers_per_iteration": preset.free.teachers_per_iteration,
        "seed": SEED,
        "shots": list(preset.shots),
        "test_tasks": preset.test_tasks,
        "draws": draws,
        "arms": {n: {k: v for k, v in a.items() if k != "accuracies"} for n, a in arms.items()},
        "results": _summaries(arms, preset.shots),
        "directions": {n: directions[n] for n in arm_names},
        "bench_match": _bench_match(bench, arms, preset.free),
        "references": _references(bench, preset.shots),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"alignment_{budget}" + ("" if setting == SETTINGS[0] else f"_{setting}")
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2))
    (out_dir / f"{stem}.md").write_text(markdown(report))
    curves = {
        a["label"]: (a["val_curve"]["iteration"], a["val_curve"]["accuracy"])
        for a in arms.values()
        if "val_curve" in a
    }
    save_curves(
        curves,
        out_dir / f"{stem}_val_curves.png",
        xlabel="FREE iteration",
        ylabel="meta-val accuracy (mean over shots)",
        title=f"Meta-val accuracy per alignment arm ({setting} pool, {budget} budget, seed {SEED})",
    )
    return report


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--budget``, ``--setting``, ``--arms``, ``--out``, ``--units``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=("smoke", "full", "long"), default="full")
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=list(ARMS))
    parser.add_argument(
        "--setting", choices=SETTINGS, default=SETTINGS[0], help="the accuracy bench's pool"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--units", type=Path, default=RESULTS_DIR / "alignment_units")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--draws", type=int, default=8, help="teacher draws for the directions")
    parser.add_argument(
        "--measure-bench-arms",
        action="store_true",
        help="train published/joint even when the accuracy bench's unit holds them",
    )
    args = parser.parse_args(argv)
    if args.draws < 1:
        parser.error(f"--draws must be >= 1: {args.draws}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    report = run(
        args.budget,
        args.arms,
        args.out,
        args.units,
        args.cache_dir,
        args.draws,
        args.measure_bench_arms,
        args.setting,
    )
    for name, summary in report["results"].items():
        if "diverged" in summary:
            print(f"{name}: diverged ({summary['diverged']})")
            continue
        cells = ", ".join(f"{s}-shot {100 * summary[str(s)]['mean']:.2f}" for s in report["shots"])
        d = report["directions"][name]
        print(f"{name}: {cells} | cos Σg {d['cos_joint']:.3f}, cos Σsign {d['cos_sign']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
