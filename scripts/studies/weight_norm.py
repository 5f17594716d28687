"""Weight-norm study: how much of a baseline's meta-test accuracy is its weight norm?

The meta-test protocol fine-tunes every parameter for 10 SGD steps at one fixed learning
rate (0.01) with batch-statistics BatchNorm. Each convolution of the Conv4 learner feeds a
BatchNorm, so the network's output does not change when a kernel is multiplied by c > 0,
but its gradient shrinks by 1/c: an SGD step of rate lr on a kernel of norm ||W|| acts
like a step of rate ~ lr / ||W||^2 on its direction. Averaging independently trained
teachers (Average, FedAvg of the pool) shrinks every kernel several times, so under a
fixed rate Average fine-tunes with a much larger effective step than a random init.

This study separates norm from direction on the accuracy benchmark's pools and meta-test
tasks (``full`` preset, seed 0 by default: task seed 10000 + seed, 600 tasks, 1 and 5
shots, lr 0.01):

- ``random``, ``average``: the benchmark's two baselines (their per-task accuracies are
  checked against the benchmark's committed unit of the same seed when there is one);
- ``random_at_average_norms``: the random init with each convolution kernel rescaled to
  the norm of Average's kernel (directions random, norms Average's);
- ``average_at_random_norms``: Average with each kernel rescaled to the random init's norm
  (directions Average's, norms random).

Heads and BatchNorm parameters keep their values (they are not scale-invariant). The
study also sweeps the fine-tuning rate of the four models on meta-val (never meta-test).

Writes ``<out>/weight_norm.{json,md}`` and ``weight_norm_lr_sweep.png``.
Usage: ``python -m scripts.studies.weight_norm [--settings single multi] [--units DIR]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from free_common.data.base import ClassImages
from free_common.evaluation import confidence_interval, evaluate, select_finetune_lr
from free_common.free.meta_learner import learner_spec
from free_common.models import Classifier
from free_common.runtime import host_record, pick_device
from scripts.bench.accuracy import PRESETS, AccuracyPreset, pool_settings
from scripts.bench.teacher_pool import DEFAULT_CACHE, build_pool, load_split, teachers_of
from server.baselines import average_teachers, random_initialisation
from server.plots import save_curve_panels

__all__ = ["MODELS", "conv_norms", "main", "plot_sweep", "rescale_conv_kernels", "run"]

logger = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
UNITS_DIR = RESULTS_DIR / "accuracy_units" / "full"
MODELS: dict[str, str] = {
    "random": "Random",
    "average": "Average (FedAvg)",
    "random_at_average_norms": "Random, kernels at Average's norms",
    "average_at_random_norms": "Average, kernels at Random's norms",
}
BENCH_MODELS = ("random", "average")
"""The models the accuracy benchmark meta-tests on the same tasks."""
PUBLISHED_LR = 0.01
SWEEP_LRS = (0.003, 0.01, 0.03, 0.1, 0.3)


def _kernels(model: nn.Module) -> dict[str, nn.Parameter]:
    """The convolution kernels (4-D parameters): the scale-invariant tensors under BN."""
    return {name: p for name, p in model.named_parameters() if p.dim() == 4}


def conv_norms(model: nn.Module) -> dict[str, float]:
    """Frobenius norm of each convolution kernel, by parameter name."""
    return {name: float(p.detach().norm()) for name, p in _kernels(model).items()}


def rescale_conv_kernels(model: Classifier, norms: dict[str, float]) -> Classifier:
    """A copy of ``model`` with each convolution kernel scaled to the norm ``norms`` names.

    Raises:
        ValueError: ``norms`` does not name exactly the model's kernels, or a norm is not
            a positive number.
    """
    kernels = _kernels(model)
    if set(norms) != set(kernels) or not all(n > 0 for n in norms.values()):
        raise ValueError(f"need a positive norm for each kernel {sorted(kernels)}, got {norms}")
    rescaled = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in _kernels(rescaled).items():
            p.mul_(norms[name] / p.norm())
    return rescaled


def _initialisations(
    preset: AccuracyPreset, setting: str, seed: int, cache: Path
) -> tuple[dict[str, Classifier], int]:
    """The four models of one pool setting (the pool is loaded from the cache or trained)."""
    spec = learner_spec(preset.free.meta_learner)
    train = load_split(preset.dataset, "train")
    pool = build_pool(train, pool_settings(preset, setting), cache_dir=cache)
    average, averaged = average_teachers(teachers_of(pool), spec)
    random = random_initialisation(spec, seed)
    models = {
        "random": random,
        "average": average,
        "random_at_average_norms": rescale_conv_kernels(random, conv_norms(average)),
        "average_at_random_norms": rescale_conv_kernels(average, conv_norms(random)),
    }
    return models, averaged


def _bench_check(
    units: Path | None, setting: str, seed: int, tests: dict[str, dict[int, np.ndarray]]
) -> dict[str, str]:
    """Per bench model: whether its per-task accuracies equal the committed unit's."""
    path = None if units is None else units / setting / f"seed{seed}" / "unit.json"
    if path is None or not path.is_file():
        return {}
    saved = json.loads(path.read_text())["accuracies"]
    verdict = {}
    for name in BENCH_MODELS:
        differ = sum(
            int(np.sum(np.asarray(saved[name][str(shot)]) != accs))
            for shot, accs in tests[name].items()
        )
        verdict[name] = "identical" if differ == 0 else f"differs on {differ} tasks"
    return verdict


def _study_setting(
    preset: AccuracyPreset,
    setting: str,
    seed: int,
    data: tuple[ClassImages, ClassImages],
    sizes: tuple[int, int],
    cache: Path,
    units: Path | None,
) -> dict[str, Any]:
    val, test = data
    test_tasks, val_tasks = sizes
    models, averaged = _initialisations(preset, setting, seed, cache)
    tests: dict[str, dict[int, np.ndarray]] = {}
    sweeps: dict[str, dict[int, dict[float, float]]] = {}
    for name, model in models.items():
        tests[name], sweeps[name] = {}, {}
        for shot in preset.shots:
            result = evaluate(
                model, test, k_shot=shot, n_tasks=test_tasks, seed=10_000 + seed, lr=PUBLISHED_LR
            )
            tests[name][shot] = result.accuracies
            sweep = select_finetune_lr(
                model, val, k_shot=shot, lrs=SWEEP_LRS, n_tasks=val_tasks, seed=20_000 + seed
            )
            sweeps[name][shot] = sweep.val
            logger.info(
                "%s %s %d-shot: test %s; val sweep %s",
                setting,
                name,
                shot,
                result.format(),
                sweep.val,
            )
    return {
        "name": setting,
        "archs": list(preset.settings[setting]),
        "average_teachers": averaged,
        "norms": {name: conv_norms(m) for name, m in models.items()},
        "test": {
            name: {
                str(shot): dict(zip(("mean", "ci95"), confidence_interval(accs), strict=True))
                for shot, accs in by_shot.items()
            }
            for name, by_shot in tests.items()
        },
        "val_sweep": {
            name: {str(shot): {str(lr): v for lr, v in s.items()} for shot, s in by_shot.items()}
            for name, by_shot in sweeps.items()
        },
        "bench_check": _bench_check(units, setting, seed, tests),
    }


def markdown(report: dict[str, Any]) -> str:
    """Tables of ``report`` (generated from the JSON, never typed by hand)."""
    shots = report["shots"]
    lines = [
        f"Weight-norm study ({report['dataset']}, `{report['preset']}` pools, "
        f"seed {report['seed']}; "
        f"{report['test_tasks']} meta-test tasks, the accuracy benchmark's tasks, fine-tuned "
        f"10 SGD steps at lr {report['lr']:g}; mean ± 95% CI in %). Kernel norms: the "
        "Frobenius norm of each of the four convolution kernels.",
        "",
    ]
    for setting in report["settings"]:
        lines += [
            f"**{setting['name']}** pool (Average over {setting['average_teachers']} Conv4 "
            "teachers):",
            "",
            "| model | kernel norms | " + " | ".join(f"{s}-shot" for s in shots) + " |",
            "|---|---|" + "---:|" * len(shots),
        ]
        for name, label in MODELS.items():
            norms = " / ".join(f"{v:.2f}" for v in setting["norms"][name].values())
            cells = [setting["test"][name][str(s)] for s in shots]
            lines.append(
                f"| {label} | {norms} | "
                + " | ".join(f"{100 * c['mean']:.2f} ± {100 * c['ci95']:.2f}" for c in cells)
                + " |"
            )
        check = setting["bench_check"]
        if check:
            said = ", ".join(f"{MODELS[n]}: {v}" for n, v in check.items())
            lines.append(f"\nAgainst the accuracy benchmark's unit (same tasks): {said}.")
        lines += [
            "",
            f"Meta-val sweep of the fine-tuning rate ({report['val_tasks']} tasks, mean in %):",
            "",
            "| model | shot | " + " | ".join(f"lr {lr:g}" for lr in report["sweep_lrs"]) + " |",
            "|---|---:|" + "---:|" * len(report["sweep_lrs"]),
        ]
        for name, label in MODELS.items():
            for shot in shots:
                sweep = setting["val_sweep"][name][str(shot)]
                cells = [f"{100 * sweep[str(lr)]:.1f}" for lr in report["sweep_lrs"]]
                lines.append(f"| {label} | {shot} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def plot_sweep(report: dict[str, Any], path: Path) -> Path:
    """Meta-val accuracy against the fine-tuning rate: one panel per (pool, shot)."""
    lrs = report["sweep_lrs"]
    panels = {
        f"{setting['name']} pool, {shot}-shot": {
            label: (lrs, [setting["val_sweep"][name][str(shot)][str(lr)] for lr in lrs])
            for name, label in MODELS.items()
        }
        for setting in report["settings"]
        for shot in report["shots"]
    }
    return save_curve_panels(
        panels,
        path,
        xlabel="fine-tuning rate (10 SGD steps)",
        ylabel="meta-val accuracy",
        title=f"Meta-val accuracy against the fine-tuning rate (seed {report['seed']})",
        columns=len(report["shots"]),
        logx=True,
    )


def run(
    settings: Sequence[str],
    seed: int,
    out_dir: Path,
    cache: Path,
    units: Path | None,
    preset_name: str = "full",
    sizes: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Measure every setting; write JSON, markdown and the sweep plot; return the report.

    Args:
        settings: pool settings of the preset (``single``, ``multi``).
        seed: the run seed (random init, task seeds 10000 + seed and 20000 + seed).
        out_dir: where the report goes.
        cache: the teacher-pool cache.
        units: the accuracy benchmark's units folder to check Random and Average against.
        preset_name: the accuracy preset whose pools and protocol are used.
        sizes: (meta-test tasks, meta-val tasks per rate); default: the preset's
            ``test_tasks`` and ``lr_val_tasks`` (the bench's rate-selection tasks).
    """
    preset = PRESETS[preset_name]
    unknown = sorted(set(settings) - set(preset.settings))
    if unknown:
        raise ValueError(
            f"settings {unknown}: the {preset_name!r} preset has {list(preset.settings)}"
        )
    test_tasks, val_tasks = sizes or (preset.test_tasks, preset.lr_val_tasks)
    started = time.perf_counter()
    data = (load_split(preset.dataset, "val"), load_split(preset.dataset, "test"))
    results = [
        _study_setting(preset, s, seed, data, (test_tasks, val_tasks), cache, units)
        for s in settings
    ]
    report: dict[str, Any] = {
        "study": "weight_norm",
        "preset": preset_name,
        "dataset": preset.dataset,
        "seed": seed,
        "shots": list(preset.shots),
        "lr": PUBLISHED_LR,
        "test_tasks": test_tasks,
        "val_tasks": val_tasks,
        "sweep_lrs": list(SWEEP_LRS),
        "settings": results,
        "seconds": time.perf_counter() - started,
        **host_record(pick_device()),
        "load_average_end": os.getloadavg()[0],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "weight_norm.json").write_text(json.dumps(report, indent=2))
    (out_dir / "weight_norm.md").write_text(markdown(report))
    plot_sweep(report, out_dir / "weight_norm_lr_sweep.png")
    return report


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--settings``, ``--seed``, ``--out``, ``--cache-dir``, ``--units``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--settings", nargs="+", default=None, help="pool settings (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument(
        "--units", type=Path, default=UNITS_DIR, help="accuracy-bench units to check against"
    )
    parser.add_argument(
        "--sizes",
        type=int,
        nargs=2,
        default=None,
        metavar=("TEST", "VAL"),
        help="meta-test tasks and meta-val tasks per rate (default: the preset's)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    known = list(PRESETS[args.preset].settings)
    settings = args.settings or known
    if not set(settings) <= set(known):
        parser.error(f"--settings {settings}: the preset's settings are {known}")
    report = run(
        settings,
        args.seed,
        args.out,
        args.cache_dir,
        args.units,
        args.preset,
        (args.sizes[0], args.sizes[1]) if args.sizes else None,
    )
    for setting in report["settings"]:
        for shot in report["shots"]:
            test = setting["test"]
            print(
                f"{setting['name']} {shot}-shot at lr {PUBLISHED_LR:g}: "
                + ", ".join(f"{n} {100 * test[n][str(shot)]['mean']:.2f}" for n in MODELS)
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
