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

Each arm trains in chunks of iterations, then of pool distillation steps (the preset's
stage after the last iteration), with meta-val at every chunk end, so the model at each
point is the best on meta-val so far: what the server would ship if stopped there. After
each chunk the server seconds so far (training and meta-val; the meta-test is not counted)
and that model's meta-test accuracy (the device's prototype head, 5-way 1-shot) are
recorded. The first point is the untrained learner at 0 s. ``free`` runs its preset to the
end; every other arm stops at the same end or once its seconds pass ``time_slack`` times
``free``'s, whichever comes first.

The pool's free models (Random, Average, the best owner, built as the accuracy benchmarks
build them) are scored on the same meta-test tasks, and the report gives each arm's server
seconds until its shipped model first reaches the best of them: the issue's measure of
"faster", FREE's seconds against scratch inversion's.

Resumable: one JSON per arm (``scripts/results/accuracy_vs_time_units/<preset>/<arm>.json``),
rewritten after every chunk; the trainer checkpoints at every chunk end
(``~/.cache/freefed/accuracy_vs_time``), so an interrupted arm resumes where it stopped,
its seconds carried over. The report (``accuracy_vs_time.{json,md,png}``) is rebuilt
from every arm's points.

Usage::

    python -m scripts.studies.accuracy_vs_time --arms free,scratch-20,scratch-200 --threads 1
    python -m scripts.studies.accuracy_vs_time --report   # rebuild from the units on disk
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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from free_common.config import FreeConfig
from free_common.data.base import ClassImages
from free_common.free.meta_learner import learner_spec
from free_common.models import Classifier
from free_common.protocols import ProtocolSettings, TaskSetting, meta_test
from free_common.runtime import host_record
from scripts.bench.accuracy_presets import key_form
from scripts.bench.free_wins import BASELINE_METHODS, baseline_candidate, free_config, pool_teachers
from scripts.bench.free_wins import PRESETS as WINS_PRESETS
from scripts.bench.teacher_pool import load_split
from server.baselines import free_trainer
from server.free_training import FreeTrainer
from server.plots import save_curve_panels

__all__ = ["PRESETS", "StudyPreset", "arm_config", "headline", "main", "markdown", "run_arm"]

logger = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
CACHE_DIR = Path("~/.cache/freefed").expanduser()
ARMS: tuple[str, ...] = ("free", "scratch-20", "scratch-200")
BASELINES_FILE = "baselines.json"
"""Beside the arms' units: the pool's free models on the same meta-test tasks."""


@dataclass(frozen=True)
class StudyPreset:
    """Sizes of one run.

    Attributes:
        wins: the ``scripts.bench.free_wins`` preset whose pool and FREE config are used.
        chunk: iterations between points (and meta-val evaluations), per arm kind.
        scratch_chunk: the same for ``scratch-<N>`` arms with N >= 100 (slow iterations).
        pool_kd_chunk: pool distillation steps between points once the iterations are
            done (a multiple of the stage's ``eval_every``, so that parts add up to one run).
        time_slack: an arm other than ``free`` stops once past this times ``free``'s seconds.
        test: the meta-test task setting and protocol sizes (prototype head only).
        seed: FREE's training seed (the same for every arm: same initial learner).
    """

    wins: str
    chunk: int
    scratch_chunk: int
    pool_kd_chunk: int
    time_slack: float
    test: ProtocolSettings
    setting: TaskSetting = TaskSetting(5, 1)
    seed: int = 0


PRESETS: dict[str, StudyPreset] = {
    "smoke": StudyPreset(
        wins="smoke",
        chunk=1,
        scratch_chunk=1,
        pool_kd_chunk=2,
        time_slack=2.0,
        test=ProtocolSettings(test_tasks=3, protocols=("proto",)),
    ),
    "full": StudyPreset(
        wins="full",
        chunk=5,
        scratch_chunk=1,
        pool_kd_chunk=400,
        time_slack=2.0,
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
    if _position(trainer) != (_point_position(points[-1]) if points else (0, 0)):
        logger.warning("%s: checkpoint and unit disagree, starting the arm again", arm)
        shutil.rmtree(work, ignore_errors=True)
        trainer, points = _trainer(preset, arm, work, val, cache_dir), []
        unit["points"] = points
    if not points:
        start = _accuracy(copy.deepcopy(trainer.learner).eval(), preset, val, test)
        points.append(
            {"iteration": 0, "pool_kd_step": 0, "seconds": 0.0, **start, **_as_current(start)}
        )
        _save(path, unit)
    while not trainer.finished and points[-1]["seconds"] < budget:
        iterations, steps = _next_stop(trainer, preset)
        started = time.perf_counter()
        result = trainer.train(progress=progress, iterations=iterations, pool_kd_steps=steps)
        seconds = points[-1]["seconds"] + time.perf_counter() - started
        score = _accuracy(result.model, preset, val, test)
        now = _accuracy(copy.deepcopy(trainer.learner).eval(), preset, val, test)
        iteration, step = _position(trainer)
        points.append(
            {
                "iteration": iteration,
                "pool_kd_step": step,
                "seconds": seconds,
                "best_iteration": result.best_iteration,
                "best_pool_kd_step": result.best_pool_kd_step,
            }
            | score
            | _as_current(now)
        )
        logger.info(
            "%s: iteration %d, pool distillation step %d, %.0f s, shipped %.2f%%, learner %.2f%%",
            arm,
            iteration,
            step,
            seconds,
            score["accuracy"],
            now["accuracy"],
        )
        _save(path, unit)
    unit.update(finished=True, budget_seconds=budget, host=host_record(trainer.device))
    _save(path, unit)
    return unit


def measure_baselines(
    preset_name: str, units_dir: Path, cache_dir: Path = CACHE_DIR
) -> dict[str, Any]:
    """Random, Average and the best owner on the arms' meta-test tasks (written once).

    The models are those of the does-FREE-win bench
    (:func:`scripts.bench.free_wins.baseline_candidate`) at the study's seed.
    """
    preset = PRESETS[preset_name]
    path = units_dir / BASELINES_FILE
    blob = {"baselines": True, "test": asdict(preset.test), **key_form(arm_config(preset, "free"))}
    key = hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:10]
    unit: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    if unit.get("key") == key:
        return unit
    wins = WINS_PRESETS[preset.wins]
    val, test = load_split(wins.dataset, "val"), load_split(wins.dataset, "test")
    teachers = pool_teachers(wins, "single", cache_dir)
    spec = learner_spec(arm_config(preset, "free").meta_learner)
    unit = {"key": key, "methods": {}}
    for method in BASELINE_METHODS:
        cand = baseline_candidate(method, spec, preset.seed, "single", val, teachers)
        if cand.model is None:
            logger.warning("baseline %s left out: %s", cand.name, cand.note)
            continue
        score = _accuracy(cand.model.eval(), preset, val, test)
        unit["methods"][cand.name] = score | {"note": cand.note}
        logger.info("baseline %s: %.2f%% (%s)", cand.name, score["accuracy"], cand.note)
    _save(path, unit)
    return unit


def best_baseline(baselines: dict[str, Any]) -> tuple[str, float] | None:
    """(name, accuracy) of the most accurate baseline, or None without any."""
    methods = baselines.get("methods", {})
    if not methods:
        return None
    name = max(methods, key=lambda m: methods[m]["accuracy"])
    return name, float(methods[name]["accuracy"])


def seconds_to_reach(unit: dict[str, Any], accuracy: float) -> float | None:
    """Server seconds at the first point whose shipped model reaches ``accuracy``, or None."""
    for point in unit["points"]:
        if point["accuracy"] >= accuracy:
            return float(point["seconds"])
    return None


def _position(trainer: FreeTrainer) -> tuple[int, int]:
    """(iterations done, pool distillation steps done) of ``trainer``."""
    return trainer.state.iteration, int(trainer.state.pool_kd.get("steps_done", 0))


def _point_position(point: dict[str, Any]) -> tuple[int, int]:
    return int(point["iteration"]), int(point.get("pool_kd_step", 0))


def _next_stop(trainer: FreeTrainer, preset: StudyPreset) -> tuple[int, int]:
    """The (iteration, pool distillation step) at which the next point is taken."""
    iteration, step = _position(trainer)
    total = trainer.config.iterations
    if iteration < total:
        return min(iteration + trainer.config.eval.every, total), 0
    return total, min(step + preset.pool_kd_chunk, trainer.config.pool_kd.steps)


def _label(arm: str, steps: int | None) -> str:
    if steps is None:
        return "FREE (meta-generator)"
    return f"scratch, {steps} steps per teacher"


def _where(point: dict[str, Any]) -> str:
    """A point's place in training: ``iteration 20`` or ``iteration 20 + 400 steps``."""
    step = int(point.get("pool_kd_step", 0))
    return f"iteration {point['iteration']}" + (f" + {step} steps" if step else "")


def _time_ratio(units: Sequence[dict[str, Any]], target: float) -> str:
    """How FREE's seconds to ``target`` compare with each other arm's."""
    reach = {u["arm"]: seconds_to_reach(u, target) for u in units}
    free = reach.get("free")
    if free is None:
        return "FREE's shipped model does not reach it"
    parts = []
    for unit in units:
        arm = unit["arm"]
        if arm == "free":
            continue
        other = reach[arm]
        if other is None:
            seconds = unit["points"][-1]["seconds"]
            parts.append(f"{arm} not within its {seconds:.0f} s (more than {seconds / free:.1f}x)")
        else:
            parts.append(f"{arm} {other:.0f} s ({other / free:.1f}x)")
    return f"FREE {free:.0f} s; " + ", ".join(parts)


def markdown(
    units: Sequence[dict[str, Any]], preset: StudyPreset, baselines: dict[str, Any] | None = None
) -> str:
    """The report: each arm's course and end, the baselines, and the time to reach the best."""
    lines = [
        f"Meta-test accuracy ({WINS_PRESETS[preset.wins].dataset}, "
        f"{preset.setting.n_way}-way {preset.setting.k_shot}-shot, prototype head, "
        f"{preset.test.test_tasks} tasks, %) against server seconds (training and meta-val), "
        f"one run per arm (seed {preset.seed}), same pool and meta-learning (`xkd-cpu`: "
        "meta-training iterations, then the pool distillation stage); "
        "`python -m scripts.studies.accuracy_vs_time`.",
        "",
        "'Shipped' is the best model on meta-val so far (what the server would ship if it "
        "stopped there), 'learner' the meta-learner as it stands; both start from the same "
        "untrained network.",
        "",
        "| arm | reached | seconds | shipped: start → end ± 95% CI | shipped model from "
        "| learner at the end | best learner (at) | run |",
        "|---|---|---:|---:|---|---:|---:|---|",
    ]
    for unit in units:
        first, last = unit["points"][0], unit["points"][-1]
        best = max(unit["points"], key=lambda p: p["current"])
        label = _label(unit["arm"], scratch_steps(unit["arm"]))
        shipped = {
            "iteration": last.get("best_iteration", 0),
            "pool_kd_step": last.get("best_pool_kd_step", 0),
        }
        lines.append(
            f"| {label} | {_where(last)} | {last['seconds']:.0f} "
            f"| {first['accuracy']:.2f} → {last['accuracy']:.2f} ± {last['ci95']:.2f} "
            f"| {_where(shipped)} | {last['current']:.2f} "
            f"| {best['current']:.2f} ({_where(best)}) "
            f"| {'finished' if unit.get('finished') else 'unfinished'} |"
        )
    methods = (baselines or {}).get("methods", {})
    if methods:
        lines += [
            "",
            "The pool's free models on the same tasks: "
            + ", ".join(
                f"{name} {m['accuracy']:.2f} ± {m['ci95']:.2f} ({m['note']})"
                for name, m in methods.items()
            )
            + ".",
        ]
        best_base = best_baseline(baselines or {})
        assert best_base is not None
        name, target = best_base
        lines += [
            "",
            f"Server seconds until the shipped model reaches the best of them ({name}, "
            f"{target:.2f}): {_time_ratio(units, target)}.",
        ]
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
                    f"; {unit['arm']} {at['current']:.2f} / {at['accuracy']:.2f} ({_where(at)})"
                )
        lines[-1] += "."
    return "\n".join(lines) + "\n"


def headline(units: Sequence[dict[str, Any]], baselines: dict[str, Any] | None = None) -> str:
    """One line for the README: where each arm stands, and its seconds to the best free model.

    Seconds per meta-training iteration, each arm's shipped model at FREE's end, and the
    seconds each arm needs to reach the best of the pool's free models (the baselines).
    """
    per_iteration = ", ".join(f"{u['arm']} {_seconds_per_iteration(u):.0f} s" for u in units)
    line = f"seconds per iteration: {per_iteration}"
    free = next((u for u in units if u["arm"] == "free"), None)
    if free is None:
        return line
    end = free["points"][-1]
    stands = []
    for unit in units:
        before = [p for p in unit["points"] if p["seconds"] <= end["seconds"]]
        if before:
            stands.append(f"{unit['arm']} {before[-1]['accuracy']:.1f}")
    start = free["points"][0]
    text = (
        f"{line}; shipped model at {end['seconds']:.0f} s (FREE's end, %): {', '.join(stands)}, "
        f"untrained start {start['accuracy']:.1f}"
    )
    best_base = best_baseline(baselines or {})
    if best_base is not None:
        name, target = best_base
        text += f"; seconds to reach the best free model ({name} {target:.1f}): "
        text += _time_ratio(units, target)
    return text


def _seconds_per_iteration(unit: dict[str, Any]) -> float:
    """Mean seconds of the arm's meta-training iterations (the stage's points left out)."""
    points = [p for p in unit["points"] if not p.get("pool_kd_step", 0)]
    return float(points[-1]["seconds"]) / max(int(points[-1]["iteration"]), 1)


def report(units_dir: Path, out_dir: Path, preset_name: str) -> dict[str, Any]:
    """Rebuild ``accuracy_vs_time.{json,md,png}`` from every arm's unit and the baselines."""
    preset = PRESETS[preset_name]
    units = [json.loads((units_dir / f"{a}.json").read_text()) for a in _arms_on_disk(units_dir)]
    if not units:
        raise FileNotFoundError(f"no arm units under {units_dir}")
    path = units_dir / BASELINES_FILE
    baselines: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    stem = "accuracy_vs_time" if preset_name == "full" else f"accuracy_vs_time_{preset_name}"
    data = {"preset": preset_name, "units": units, "baselines": baselines}
    (out_dir / f"{stem}.json").write_text(json.dumps(data, indent=2))
    (out_dir / f"{stem}.md").write_text(markdown(units, preset, baselines))
    (out_dir / f"{stem}_headline.md").write_text(headline(units, baselines) + "\n")
    end = max(p["seconds"] for u in units for p in u["points"])
    flat = {
        f"{name} (no training)": ([0.0, end], [m["accuracy"], m["accuracy"]])
        for name, m in baselines.get("methods", {}).items()
    }
    save_curve_panels(
        {
            title: {
                _label(u["arm"], scratch_steps(u["arm"])): (
                    [p["seconds"] for p in u["points"]],
                    [p[key] for p in u["points"]],
                )
                for u in units
            }
            | flat
            for title, key in (("the learner as it stands", "current"), ("shipped", "accuracy"))
        },
        out_dir / f"{stem}.png",
        xlabel="server seconds (training and meta-val)",
        ylabel="meta-test, 5-way 1-shot, prototypes (%)",
        title="Accuracy against server time, same meta-learning",
    )
    return data


def _arms_on_disk(units_dir: Path) -> list[str]:
    found = {p.stem for p in units_dir.glob("*.json") if p.name != BASELINES_FILE}
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
    parser.add_argument(
        "--no-baselines", action="store_true", help="leave the pool's free models out"
    )
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
        if not args.no_baselines:
            measure_baselines(args.preset, units_dir, args.cache_dir)
    data = report(units_dir, args.out, args.preset)
    print(markdown(data["units"], PRESETS[args.preset], data["baselines"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
