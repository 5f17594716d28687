"""Levers on FREE, scored the way the main job's guard scores them, on recorded main-job pools.

Each unit trains FREE (the run's own configuration plus one lever's run-config overrides)
on the pool of a finished main-job run (``runs/main-<time>/out/pool``, opened read-only)
and scores the meta-learner on glyph meta-val exactly as the run's guard did
(:func:`server.comparison.compare`: the tuned protocol's best grid point, mean over the
shots), beside the run's own guard scores of FREE, Random, Average and the best owner on
the same pool. Meta-test is never used: this study chooses levers.

Units are resumable (``scripts/results/levers_units/<seed>-<lever>.json``, written when a
unit finishes); the report is rebuilt from every finished unit.

Usage::

    python -m scripts.studies.levers runs/main-A runs/main-B --levers best_teacher --threads 1
    python -m scripts.studies.levers --report
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from free_common.data.registry import load_split
from free_common.free.meta_learner import learner_spec
from free_common.run_config import RunConfig
from free_common.runtime import host_record, pick_device
from server.comparison import Candidate, compare
from server.federation import FederationSettings
from server.free_training import FreeTrainer
from server.pool import ModelPool

__all__ = ["LEVERS", "main", "markdown", "run_unit"]

logger = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
LEVERS: dict[str, dict[str, Any]] = {
    "default": {},
    "bn_prior_1": {"free.inversion.bn-weight": 1.0},
    "best_teacher_lr1e-4": {
        "free.meta-learner.init": "best_teacher",
        "free.meta-learner.outer-lr": 1e-4,
    },
}
"""Lever name -> run-config overrides on top of the recorded run's own."""
BASELINES = ("FREE", "Random", "Average", "Best owner")


def run_unit(run_dir: Path, lever: str, units: Path) -> dict[str, Any]:
    """Train and score one lever on one recorded run's pool (skipped when its unit exists)."""
    summary = json.loads((run_dir / "out" / "summary.json").read_text())
    seed = int(summary["settings"]["seed"])
    path = units / f"{seed}-{lever}.json"
    if path.is_file():
        logger.info("unit %s: done before", path.name)
        return dict(json.loads(path.read_text()))
    recorded = RunConfig({"seed": seed}).free_config()
    if json.loads(json.dumps(asdict(recorded))) != summary["free_config"]:
        raise SystemExit(f"{run_dir} was not made with the default FREE configuration")
    config = RunConfig({"seed": seed, **LEVERS[lever]}).free_config()
    val = load_split("glyphs", "val")
    pool = ModelPool(run_dir / "out" / "pool", readonly=True)
    logger.info(
        "unit %s: training on %d pooled models of seed %d", path.name, len(pool.ids()), seed
    )
    started = time.perf_counter()
    device = pick_device()
    with tempfile.TemporaryDirectory() as work:
        trainer = FreeTrainer(
            config, pool, val_data=val, test_data=None, work_dir=Path(work), device=device
        )
        result = trainer.train(progress=True)
        init = trainer.state.init
    seconds = time.perf_counter() - started
    settings = FederationSettings.from_run_config(RunConfig({}))
    ev = config.eval
    row = compare(
        [Candidate("FREE", result.model, learner_spec(config.meta_learner), lever)],
        val,
        val,
        n_way=ev.n_way,
        shots=ev.shots,
        q_query=ev.q_query,
        settings=settings.protocol_settings(test_tasks=1, test_seed=ev.seed),
    )[0]
    unit = {
        "seed": seed,
        "lever": lever,
        "overrides": LEVERS[lever],
        "run": run_dir.name,
        "guard_score": row.val_score,
        "run_scores": summary["verdict"]["meta_val"],
        "best_iteration": result.best_iteration,
        "val_history": [
            [h["iteration"], h["val_accuracy"]] for h in result.history if h["kind"] == "val"
        ],
        "init": init,
        "train_seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
        "host": host_record(device),
    }
    units.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(unit, indent=1))
    logger.info("unit %s: guard score %.4f", path.name, row.val_score)
    return unit


def markdown(units: list[dict[str, Any]]) -> str:
    """Per seed: each lever's guard score beside the recorded run's four, in %."""
    seeds = sorted({u["seed"] for u in units})
    levers = [lv for lv in LEVERS if any(u["lever"] == lv for u in units)]
    lines = [
        "Meta-val guard score (%: the tuned protocol's best grid point, mean over 1- and "
        "5-shot, 30 tasks per point), per recorded main-job pool; `python -m "
        "scripts.studies.levers <run dirs>`.",
        "",
        "| seed | "
        + " | ".join(f"run's {b}" for b in BASELINES)
        + " | "
        + " | ".join(levers)
        + " |",
        "|---" * (1 + len(BASELINES) + len(levers)) + "|",
    ]
    for seed in seeds:
        mine = {u["lever"]: u for u in units if u["seed"] == seed}
        ref = next(iter(mine.values()))["run_scores"]
        cells = [f"{100 * ref[b]:.2f}" if b in ref else "" for b in BASELINES]
        cells += [f"{100 * mine[lv]['guard_score']:.2f}" if lv in mine else "" for lv in levers]
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "`default` retrains the run's own configuration at this study's thread count; its "
        "distance from the run's FREE column is the run-to-run noise of float reductions.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run directories, ``--levers``, ``--threads``, ``--report``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", type=Path, nargs="*")
    p.add_argument("--levers", default=",".join(LEVERS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    p.add_argument("--report", action="store_true", help="only rebuild the report")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    levers = [lv for lv in args.levers.split(",") if lv]
    unknown = [lv for lv in levers if lv not in LEVERS]
    if unknown:
        p.error(f"unknown levers {unknown}; known: {', '.join(LEVERS)}")
    units_dir = args.out / "levers_units"
    if not args.report:
        for run_dir in args.run_dirs:
            for lever in levers:
                run_unit(run_dir, lever, units_dir)
    units = [json.loads(f.read_text()) for f in sorted(units_dir.glob("*.json"))]
    text = markdown(units) if units else "no finished units\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "levers.json").write_text(json.dumps({"units": units}, indent=1))
    (args.out / "levers.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
