"""Meta-test accuracy against server seconds: FREE's meta-generator against scratch inversion.

The paper's "faster and better" as one picture: the same pool, seed and meta-learning (the
shipped default, ``xkd-cpu``), with tasks recovered either by FREE's meta-generator (k Adam
steps per teacher from a meta-learned start) or by a fresh generator per teacher (the
from-scratch inversion of BiDf-MKD and TGR), run for the same server time.

Arms:

- ``free``: the preset's meta-generator (k inner steps);
- ``scratch-<N>``: a fresh generator per teacher, N Adam steps. ``scratch-200`` is the
  published budget; ``scratch-20`` is about where from-scratch inversion first matches
  FREE's recovery quality on these teachers (``scripts/results/recovery_speed.md``).

Each arm trains in chunks of iterations with meta-val at every chunk end, so the model at
each point is the best on meta-val so far: what the server would ship if stopped there.
After each chunk the server seconds so far (training and meta-val; the meta-test is not
counted) and that model's meta-test accuracy (the device's prototype head, 5-way 1-shot)
are recorded. The first point is the untrained learner at 0 s. ``free`` runs its preset's
iterations; every other arm stops at the same iterations or once its seconds pass
``time_slack`` times ``free``'s, whichever comes first.

Resumable: one JSON per arm (``scripts/results/accuracy_vs_time_units/<preset>/<arm>.json``),
rewritten after every chunk; the trainer checkpoints at every chunk end
(``~/.cache/freefed/accuracy_vs_time``), so an interrupted arm resumes where it stopped,
its seconds carried over. The report (``accuracy_vs_time.{json,md,png}``) is rebuilt
from every arm's points.

Usage::

    python -m scripts.studies.accuracy_vs_time --arms free,scratch-20,scratch-200 --threads 1
    python -m scripts.studies.accuracy_vs_time --report
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from free_common.config import FreeConfig
from free_common.data.base import ClassImages
from free_common.models import Classifier
from free_common.protocols import ProtocolSettings, TaskSetting, meta_test
from free_common.runtime import host_record
from scripts.bench.accuracy_presets import key_form
from scripts.bench.free_wins import PRESETS as WINS_PRESETS
from scripts.bench.free_wins import free_config, pool_teachers
from scripts.bench.teacher_pool import load_split
from server.baselines import free_trainer
from server.free_training import FreeTrainer
from server.plots import save_curve_panels

__all__ = ["PRESETS", "StudyPreset", "arm_config", "headline", "main", "markdown", "run_arm"]

logger = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
CACHE_DIR = Path("~/.cache/freefed").expanduser()
ARMS: tuple[str, ...] = ("free", "scratch-20", "scratch-200")


@dataclass(frozen=True)
class StudyPreset:
    """Sizes of one run.

    Attributes:
        wins: the ``scripts.bench.free_wins`` preset whose pool and FREE config are used.
        chunk: iterations between points (and meta-val evaluations), per arm kind.
        scratch_chunk: the same for ``scratch-<N>`` arms with N >= 100 (slow iterations).
        time_slack: an arm other than ``free`` stops once past this times ``free``'s seconds.
        test: the meta-test task setting and protocol sizes (prototype head only).
        seed: FREE's training seed (the same for every arm: same initial learner).
    """

    wins: str
    chunk: int
    scratch_chunk: int
    time_slack: float
    test: ProtocolSettings
    setting: TaskSetting = TaskSetting(5, 1)
    seed: int = 0


PRESETS: dict[str, StudyPreset] = {
    "smoke": StudyPreset(
        wins="smoke",
        chunk=1,
        scratch_chunk=1,
        time_slack=2.0,
        test=ProtocolSettings(test_tasks=3, protocols=("proto",)),
    ),
    "full": StudyPreset(
        wins="full",
        chunk=5,
        scratch_chunk=1,
        time_slack=1.25,
        test=ProtocolSettings(test_tasks=300, protocols=("proto",)),
    ),
}


def scratch_steps(arm: str) -> int | None:
    """N of ``scratch-<N>``; None for ``free``. Raises ValueError on another name."""
    if arm == "free":
        return None
    head, _, steps = arm.partition("-")
    if head != "scratch" or not steps.isdigit() or int(steps) < 1:
        raise ValueError(f"unknown arm {arm!r}: expected 'free' or 'scratch-<steps>'")
    return int(steps)


def arm_config(preset: StudyPreset, arm: str) -> FreeConfig:
    """The arm's FREE config: meta-val and checkpoint at every chunk end."""
    config = free_config(WINS_PRESETS[preset.wins], "free", preset.seed)
    steps = scratch_steps(arm)
    chunk = preset.chunk if steps is None or steps < 100 else preset.scratch_chunk
    config = replace(config, checkpoint_every=chunk, eval=replace(config.eval, every=chunk))
    if steps is not None:
        config = replace(config, inversion=replace(config.inversion, scratch_steps=steps))
    return config


def _key(preset: StudyPreset, arm: str) -> str:
    blob = json.dumps({"arm": arm, **key_form(arm_config(preset, arm))}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _accuracy(
    model: Classifier, preset: StudyPreset, val: ClassImages, test: ClassImages
) -> dict[str, float]:
    result = meta_test(model, val, test, preset.setting, preset.test)["proto"]
    return {"accuracy": 100 * result.result.mean, "ci95": 100 * result.result.ci95}


def _as_current(score: dict[str, float]) -> dict[str, float]:
    """``score`` under the keys of the learner as it stands (not the shipped model)."""
    return {"current": score["accuracy"], "current_ci95": score["ci95"]}


def _save(path: Path, unit: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(unit, indent=2))
    tmp.replace(path)


def _budget(units_dir: Path, arm: str, preset: StudyPreset) -> float:
    """Seconds after which a non-``free`` arm stops (``free`` must have finished first)."""
    if arm == "free":
        return float("inf")
    path = units_dir / "free.json"
    free = json.loads(path.read_text()) if path.is_file() else {}
    if not free.get("finished"):
        raise RuntimeError(f"arm {arm} needs the finished 'free' arm first ({path})")
    return preset.time_slack * float(free["points"][-1]["seconds"])


def _trainer(
    preset: StudyPreset, arm: str, work: Path, val: ClassImages, cache_dir: Path
) -> FreeTrainer:
    wins = WINS_PRESETS[preset.wins]
    teachers = pool_teachers(wins, "single", cache_dir)
    variant = "free" if scratch_steps(arm) is None else "scratch"
    return free_trainer(arm_config(preset, arm), variant, teachers, val_data=val, work_dir=work)


def run_arm(
    preset_name: str,
    arm: str,
    units_dir: Path,
    cache_dir: Path = CACHE_DIR,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or resume) one arm to its end; returns its unit (also written to disk).

    Pools come from ``cache_dir / "pools"``, checkpoints go to
    ``cache_dir / "accuracy_vs_time"``.
    """
    preset = PRESETS[preset_name]
    path = units_dir / f"{arm}.json"
    key = _key(preset, arm)
    unit: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    if unit.get("finished") and unit.get("key") == key:
        return unit
    work = cache_dir / "accuracy_vs_time" / preset_name / f"{arm}-{key}"
    if unit.get("key") != key:
        unit = {"arm": arm, "key": key, "points": [], "finished": False}
        shutil.rmtree(work, ignore_errors=True)
    budget = _budget(units_dir, arm, preset)
    val = load_split(WINS_PRESETS[preset.wins].dataset, "val")
    test = load_split(WINS_PRESETS[preset.wins].dataset, "test")
    trainer = _trainer(preset, arm, work, val, cache_dir)
    points: list[dict[str, Any]] = unit["points"]
    if trainer.state.iteration != (points[-1]["iteration"] if points else 0):
        logger.warning("%s: checkpoint and unit disagree, starting the arm again", arm)
        shutil.rmtree(work, ignore_errors=True)
        trainer, points = _trainer(preset, arm, work, val, cache_dir), []
        unit["points"] = points
    if not points:
        start = _accuracy(copy.deepcopy(trainer.learner).eval(), preset, val, test)
        points.append({"iteration": 0, "seconds": 0.0, **start, **_as_current(start)})
        _save(path, unit)
    total = trainer.config.iterations
    chunk = trainer.config.eval.every
    while points[-1]["iteration"] < total and points[-1]["seconds"] < budget:
        target = min(points[-1]["iteration"] + chunk, total)
        started = time.perf_counter()
        result = trainer.train(progress=progress, iterations=target)
        seconds = points[-1]["seconds"] + time.perf_counter() - started
        score = _accuracy(result.model, preset, val, test)
        now = _accuracy(copy.deepcopy(trainer.learner).eval(), preset, val, test)
        points.append(
            {"iteration": target, "seconds": seconds, "best_iteration": result.best_iteration}
            | score
            | _as_current(now)
        )
        logger.info(
            "%s: iteration %d, %.0f s, shipped %.2f%% (iteration %d), learner %.2f%%",
            arm,
            target,
            seconds,
            score["accuracy"],
            result.best_iteration,
            now["accuracy"],
        )
        _save(path, unit)
    unit.update(finished=True, budget_seconds=budget, host=host_record(trainer.device))
    _save(path, unit)
    return unit


def _label(arm: str, steps: int | None) -> str:
    if steps is None:
        return "FREE (meta-generator)"
    return f"scratch, {steps} steps per teacher"


def markdown(units: Sequence[dict[str, Any]], preset: StudyPreset) -> str:
    """The report's table: each arm's accuracy at each point, and the end of each arm."""
    lines = [
        f"Meta-test accuracy ({WINS_PRESETS[preset.wins].dataset}, "
        f"{preset.setting.n_way}-way {preset.setting.k_shot}-shot, prototype head, "
        f"{preset.test.test_tasks} tasks, %) against server seconds (training and meta-val), "
        f"one run per arm (seed {preset.seed}), same pool and meta-learning (`xkd-cpu`); "
        "`python -m scripts.studies.accuracy_vs_time`.",
        "",
        "'Shipped' is the best model on meta-val so far (what the server would ship if it "
        "stopped there), 'learner' the meta-learner as it stands; both start from the same "
        "untrained network.",
        "",
        "| arm | iterations | seconds | shipped: start → end ± 95% CI | shipped from "
        "iteration | learner at the end | best learner (iteration) | run |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for unit in units:
        first, last = unit["points"][0], unit["points"][-1]
        best = max(unit["points"], key=lambda p: p["current"])
        label = _label(unit["arm"], scratch_steps(unit["arm"]))
        lines.append(
            f"| {label} | {last['iteration']} | {last['seconds']:.0f} "
            f"| {first['accuracy']:.2f} → {last['accuracy']:.2f} ± {last['ci95']:.2f} "
            f"| {last.get('best_iteration', 0)} | {last['current']:.2f} "
            f"| {best['current']:.2f} ({best['iteration']}) "
            f"| {'finished' if unit.get('finished') else 'unfinished'} |"
        )
    free = next((u for u in units if u["arm"] == "free"), None)
    if free is not None:
        end = free["points"][-1]
        lines += [
            "",
            f"At FREE's end ({end['seconds']:.0f} s), learner / shipped: FREE "
            f"{end['current']:.2f} / {end['accuracy']:.2f}",
        ]
        for unit in units:
            if unit["arm"] == "free":
                continue
            before = [p for p in unit["points"] if p["seconds"] <= end["seconds"]]
            if before:
                at = before[-1]
                lines[-1] += (
                    f"; {unit['arm']} {at['current']:.2f} / {at['accuracy']:.2f}"
                    f" (iteration {at['iteration']})"
                )
        lines[-1] += "."
    return "\n".join(lines) + "\n"


def headline(units: Sequence[dict[str, Any]]) -> str:
    """One line for the README: seconds per iteration, and where each arm stands at FREE's end."""
    per_iteration = ", ".join(
        f"{u['arm']} {u['points'][-1]['seconds'] / max(u['points'][-1]['iteration'], 1):.0f} s"
        for u in units
    )
    line = f"seconds per iteration: {per_iteration}"
    free = next((u for u in units if u["arm"] == "free"), None)
    if free is None:
        return line
    end = free["points"][-1]
    stands = []
    for unit in units:
        before = [p for p in unit["points"] if p["seconds"] <= end["seconds"]]
        if before:
            stands.append(f"{unit['arm']} {before[-1]['current']:.1f}")
    start = free["points"][0]
    text = (
        f"{line}; learner at {end['seconds']:.0f} s (FREE's end, %): {', '.join(stands)}, "
        f"untrained start {start['current']:.1f}"
    )
    if all(p["accuracy"] == start["accuracy"] for u in units for p in u["points"]):
        text += "; the shipped model (best on meta-val) is the start in every arm"
    return text


def report(units_dir: Path, out_dir: Path, preset_name: str) -> dict[str, Any]:
    """Rebuild ``accuracy_vs_time.{json,md,png}`` from every arm's unit."""
    preset = PRESETS[preset_name]
    units = [json.loads((units_dir / f"{a}.json").read_text()) for a in _arms_on_disk(units_dir)]
    if not units:
        raise FileNotFoundError(f"no arm units under {units_dir}")
    stem = "accuracy_vs_time" if preset_name == "full" else f"accuracy_vs_time_{preset_name}"
    data = {"preset": preset_name, "units": units}
    (out_dir / f"{stem}.json").write_text(json.dumps(data, indent=2))
    (out_dir / f"{stem}.md").write_text(markdown(units, preset))
    (out_dir / f"{stem}_headline.md").write_text(headline(units) + "\n")
    save_curve_panels(
        {
            title: {
                _label(u["arm"], scratch_steps(u["arm"])): (
                    [p["seconds"] for p in u["points"]],
                    [p[key] for p in u["points"]],
                )
                for u in units
            }
            for title, key in (("the learner as it stands", "current"), ("shipped", "accuracy"))
        },
        out_dir / f"{stem}.png",
        xlabel="server seconds (training and meta-val)",
        ylabel="meta-test, 5-way 1-shot, prototypes (%)",
        title="Accuracy against server time, same meta-learning",
    )
    return data


def _arms_on_disk(units_dir: Path) -> list[str]:
    found = {p.stem for p in units_dir.glob("*.json")}
    return [a for a in ARMS if a in found] + sorted(found - set(ARMS))


def main(argv: list[str] | None = None) -> int:
    """Command line: arms, preset, threads, report only, output and cache folders."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--cache-dir", type=Path, default=CACHE_DIR, help="pools and the arms' checkpoints"
    )
    parser.add_argument("--report", action="store_true", help="only rebuild the report")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    units_dir = args.out / "accuracy_vs_time_units" / args.preset
    if not args.report:
        arms = [a for a in args.arms.split(",") if a]
        for arm in arms:
            scratch_steps(arm)
        for arm in sorted(arms, key=lambda a: a != "free"):
            run_arm(args.preset, arm, units_dir, args.cache_dir)
    data = report(units_dir, args.out, args.preset)
    print(markdown(data["units"], PRESETS[args.preset]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
