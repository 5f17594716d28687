"""Poisoned-pool benchmark: what the attacks cost FREE, and what the defences catch.

Pools: a cached teacher pool (``scripts.bench.teacher_pool``; Conv4 + ResNet-10 + ResNet-18, the
classes of every teacher drawn from a shared vocabulary, so that teachers share classes)
whose teachers carry their class names (``label:<glyph>``), as a collaboration with shared
labels would. For each run seed, a shuffled order of the teachers is drawn; at poison
level p the first ``round(p * N)`` of them are replaced by attacks made from them
(``scripts.bench.poison_attacks``, the six kinds in turn): label-permuted, backdoored, trained on
another owner's classes under false names, fine-tuned to a constant class, model
replacement with scaled weights, and a free-rider copy (with noise) of an honest teacher
that comes earlier in the pool. The attacks of a lower level are those of a higher one.

Two parts, each resumable (one JSON per unit under ``<out>/poison_units/<preset>/``):

- ``detection`` (no FREE training): per (level, seed), every teacher of the poisoned pool
  screened as the FREE trainer screens it (``FreeTrainer.screen_pool``); per check, the
  share of each attack it flags and the share of honest teachers it flags. A teacher met
  again in a later unit (an honest teacher is in every pool of every seed) is not measured
  again: its screening alone is recalled from a memo keyed by its weights, the screening
  settings and the probes (``server.trust.PoolScreen``'s ``memo``, kept beside the built
  attacks), and the pool checks run afresh on each pool. An honest
  teacher whose training failed (its own held-out accuracy under :data:`BROKEN_BELOW`) is
  reported apart, by name: excluding it is right, not a false positive.
- ``accuracy``: per (level, defences on/off, seed), FREE trained through its public API
  (``FreeTrainer`` on the pool, the published algorithm's ``paper-cpu`` preset cut to the
  preset's budget, screening on or off), then meta-tested under the tuned protocol
  (``free_common.protocols.meta_test``: fine-tuning rate and head start chosen on
  meta-val, then meta-test once).

Writes ``<out>/<stem>.json``, ``<stem>.md`` and ``<stem>.png`` (stem ``poison`` for
``full``, ``poison_<preset>`` otherwise).

Usage: ``python -m scripts.bench.poison --preset quick`` (both parts);
``python -m scripts.bench.poison --preset full --part detection``. The ``full`` preset
screens as its units were measured, without the trigger scan; ``full-scan`` is the same
bench with today's screening (``--preset full-scan --part detection``, its own units).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from free_common.config import (
    EvalConfig,
    FreeConfig,
    InversionConfig,
    MetaLearnerConfig,
    ReplayConfig,
)
from free_common.data.base import ClassImages
from free_common.free.teachers import InMemoryTeachers, Teacher, teacher_from_state_dict
from free_common.free.trust.checks import CHECKS
from free_common.protocols import ProtocolSettings, TaskSetting, meta_test
from free_common.runtime import host_record
from scripts.bench import poison_attacks as attacks
from scripts.bench.accuracy_presets import BENCH_MAX_LOGIT
from scripts.bench.teacher_pool import DEFAULT_CACHE, PoolSettings, build_pool, load_split
from server.free_training import FreeTrainer, FreeTrainingError
from server.trust import ScreenedAlone

__all__ = ["PRESETS", "PoisonPreset", "compose_pool", "main", "run"]

logger = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
CACHE_DIR = Path(os.environ.get("FREEFED_POISON_CACHE", "~/.cache/freefed/poison")).expanduser()
"""Built attacks (per preset and seed) and the FREE checkpoints of unfinished units."""
PARTS: tuple[str, ...] = ("detection", "accuracy")
DEFENCES: tuple[str, ...] = ("off", "on")
GOALS = {"0.2": 1.0, "0.4": 3.0}
"""Poison level -> the most 5-way 1-shot points FREE with defences may lose (issue 17)."""
DETECTION_GOAL, FALSE_POSITIVE_GOAL = 0.9, 0.02
BROKEN_BELOW = 0.5
"""An honest teacher whose accuracy on its own held-out images is below this (2.5 times
chance for 5 classes; the line the screening study draws between a training that worked
and one that failed) carries little or nothing of its task, so excluding it is right and is
not counted as a false positive. The report names every such teacher
(``broken``) with its accuracy and whether the screening excluded it."""


@dataclass(frozen=True)
class PoisonPreset:
    """Sizes of one benchmark run.

    Attributes:
        dataset: ``"glyphs"`` or ``"synthetic"``.
        pool: the honest pool the attacks are made from.
        levels: poison levels (shares of the pool replaced by attacks).
        seeds: run seeds (the attacked teachers, the attacks, FREE and the tasks).
        attack_epochs: training epochs of the attacks that train (backdoor, false names).
        iterations: FREE iterations (the rest of FREE's configuration is the published
            algorithm's ``paper-cpu`` preset, whatever it is when the bench runs).
        warmup: FREE warm-up iterations.
        eval_every: meta-val evaluations every this many iterations.
        val_tasks: meta-val tasks per evaluation.
        shots: meta-test support sizes.
        test_tasks: meta-test tasks per (unit, shot).
        finetune_lrs: the tuned protocol's grid of fine-tuning rates.
        lr_val_tasks: meta-val tasks per point of the tuned protocol's grid.
        note: what the preset is for.
        base: FREE configuration the budget is applied to
            (None: ``FreeConfig.preset("paper-cpu")``).
        trigger_steps: the screening's trigger-scan steps (None: the default screening's;
            0: no scan, as the ``full`` units were measured before the scan existed).
    """

    dataset: str
    pool: PoolSettings
    levels: tuple[float, ...]
    seeds: tuple[int, ...]
    attack_epochs: int
    iterations: int
    warmup: int
    eval_every: int
    val_tasks: int
    shots: tuple[int, ...]
    test_tasks: int
    finetune_lrs: tuple[float, ...]
    lr_val_tasks: int
    note: str
    base: FreeConfig | None = None
    trigger_steps: int | None = None

    def free_config(self, seed: int, *, defences: bool) -> FreeConfig:
        """The published algorithm's CPU configuration cut to this preset's budget."""
        base = self.base if self.base is not None else FreeConfig.preset("paper-cpu")
        return replace(
            base,
            iterations=self.iterations,
            warmup=self.warmup,
            seed=seed,
            checkpoint_every=self.eval_every,
            eval=replace(base.eval, every=self.eval_every, val_tasks=self.val_tasks),
            screening=replace(
                base.screening,
                enabled=defences,
                max_logit=BENCH_MAX_LOGIT,
                trigger_steps=(
                    base.screening.trigger_steps
                    if self.trigger_steps is None
                    else self.trigger_steps
                ),
            ),
        )


_SMOKE_FREE = FreeConfig(
    iterations=2,
    warmup=1,
    teachers_per_iteration=2,
    inversion=InversionConfig(
        latent_dim=16, generator_width=4, inner_steps=2, images_per_class=4, scratch_steps=4
    ),
    meta_learner=MetaLearnerConfig(width=4),
    replay=ReplayConfig(q_query=2, meta_batch=2, inner_steps=1, patience=1, max_meta_batches=2),
    eval=EvalConfig(every=2, val_tasks=2, test_tasks=2, q_query=5),
    # the test preset's screening, which excludes nothing, at the default images per class
    screening=replace(FreeConfig.preset("test").screening, steps=2, images_per_class=8),
)
_MIXED = ("conv4", "resnet10", "resnet18")
DETECTION_REVISION = 2
"""Bumped when the screening code changes its verdicts at unchanged settings, so that the
detection units are measured again. 2: the units of 2026-12-04 no longer reproduced with
the code and pools of 2026-12-06 (false names caught 34 of 36 where they recorded 32).
Not bumped when an output match with unrelated weights became a suspicion instead of an
exclusion: no unit held such a verdict (every near-duplicate of the quick and full units
matched its source on weights, similarity 0.965 or more), so none changes. Nor when such a
suspicion came to be judged on the hidden units (a unit match excludes a copy with reordered
units): the check runs only on those suspicions, and no unit held one."""

PRESETS: dict[str, PoisonPreset] = {
    "smoke": PoisonPreset(
        dataset="synthetic",
        pool=PoolSettings(archs=("conv4",), teachers=6, epochs=2, conv4_width=4, vocabulary=8),
        levels=(0.0, 0.5),
        seeds=(0,),
        attack_epochs=1,
        iterations=2,
        warmup=1,
        eval_every=2,
        val_tasks=2,
        shots=(1,),
        test_tasks=2,
        finetune_lrs=(0.01, 0.1),
        lr_val_tasks=2,
        note="SMOKE: wiring check on synthetic data; numbers are meaningless.",
        base=_SMOKE_FREE,
    ),
    "quick": PoisonPreset(
        dataset="glyphs",
        pool=PoolSettings(archs=_MIXED, teachers=30, vocabulary=30),
        levels=(0.0, 0.2, 0.4),
        seeds=(0,),
        attack_epochs=30,
        iterations=4,
        warmup=1,
        eval_every=2,
        val_tasks=10,
        shots=(1, 5),
        test_tasks=30,
        finetune_lrs=(0.01, 0.1),
        lr_val_tasks=10,
        note="QUICK: a 30-teacher pool (30-class vocabulary), levels 0/20/40%, one seed, "
        "FREE (`paper-cpu`) 4 iterations, 30 meta-test tasks; a wiring run, not the figures.",
    ),
    "full": PoisonPreset(
        dataset="glyphs",
        pool=PoolSettings(archs=_MIXED, teachers=100, vocabulary=100),
        levels=(0.0, 0.1, 0.2, 0.4),
        seeds=(0, 1, 2),
        attack_epochs=30,
        iterations=30,
        warmup=5,
        eval_every=10,
        val_tasks=50,
        shots=(1, 5),
        test_tasks=600,
        finetune_lrs=(0.01, 0.03, 0.1, 0.3),
        lr_val_tasks=100,
        note="FULL: 100-teacher pool (100-class vocabulary), levels 0/10/20/40%, 3 seeds; "
        "FREE's `paper-cpu` preset cut to 30 iterations (5 warm-up, meta-val 50 tasks "
        "every 10) as in the accuracy bench's `full`; 600 meta-test tasks, tuned protocol; "
        "screening without the trigger scan (its units were measured before the scan).",
        trigger_steps=0,
    ),
}
PRESETS["full-scan"] = replace(
    PRESETS["full"],
    trigger_steps=None,
    note="FULL-SCAN: the `full` preset with today's screening, trigger scan included (its "
    "own units; `full`'s were measured before the scan).",
)


# ---------------------------------------------------------------------- the poisoned pools


def _names(data: ClassImages, classes: Sequence[int]) -> list[str]:
    return [f"label:{data.class_names[c]}" for c in classes]


def _attack(
    kind: str,
    victim: attacks.Model,
    honest: list[attacks.Model],
    data: ClassImages,
    rng: np.random.Generator,
    epochs: int,
) -> attacks.Model:
    """``kind`` made from ``victim``; ``honest``: the teachers that stay honest, in order."""
    model_id = f"{victim.model_id}-{kind}"
    if kind == "label_permuted":
        return attacks.label_permuted(victim, rng, model_id=model_id)
    if kind == "backdoor":
        return attacks.backdoored(victim, data, rng, model_id=model_id, epochs=epochs)
    if kind == "false_names":
        others = [m for m in honest if m.spec.num_classes == victim.spec.num_classes]
        other = others[int(rng.integers(len(others)))]
        return attacks.false_names(victim, other, data, rng, model_id=model_id, epochs=epochs)
    if kind == "constant_class":
        return attacks.constant_class(victim, data, rng, model_id=model_id)
    if kind == "scaled_replacement":
        return attacks.scaled_replacement(victim, honest, model_id=model_id)
    if kind == "free_rider":
        return attacks.free_rider(honest[int(rng.integers(len(honest)))], rng, model_id=model_id)
    raise attacks.AttackError(f"unknown attack {kind!r}")


def compose_pool(
    members: Sequence[attacks.Model],
    data: ClassImages,
    level: float,
    preset: PoisonPreset,
    seed: int,
    built: dict[int, attacks.Model] | None = None,
) -> list[attacks.Model]:
    """The pool at ``level`` in acceptance order.

    A seeded permutation ranks the teachers; the first ``round(max(levels) * N)`` may be
    attacked, the others never are. At ``level`` the first ``round(level * N)`` ranks are
    replaced by attacks, kind ``ATTACKS[rank % 6]``, each built from the teacher there with
    its own generator, so a level's attacks are the first ones of any higher level. A
    false name is trained on, and a free-rider copies, a never-attacked teacher. The pool
    is then put in a second seeded order, and every copy is moved right after the teacher
    it copies (a copy follows its source). ``built`` caches attacks by rank across calls.
    """
    n = len(members)
    ranked = [members[i] for i in np.random.default_rng([seed, 17]).permutation(n)]
    spare = round(max(preset.levels) * n)
    safe = ranked[spare:]
    cache = built if built is not None else {}
    pool = list(ranked)
    for rank in range(round(level * n)):
        if rank not in cache:
            kind = attacks.ATTACKS[rank % len(attacks.ATTACKS)]
            rng = np.random.default_rng([seed, rank, 23])
            cache[rank] = _attack(kind, ranked[rank], safe, data, rng, preset.attack_epochs)
        pool[rank] = cache[rank]
    shuffled = [pool[i] for i in np.random.default_rng([seed, 29]).permutation(n)]
    return _copies_after_sources(shuffled)


def _copies_after_sources(pool: list[attacks.Model]) -> list[attacks.Model]:
    """Move every free-rider right after the teacher it copies."""
    copies = [m for m in pool if m.kind == "free_rider"]
    rest = [m for m in pool if m.kind != "free_rider"]
    for copy in copies:
        at = next(i for i, m in enumerate(rest) if m.model_id == copy.source)
        rest.insert(at + 1, copy)
    return rest


def _teacher(model: attacks.Model, data: ClassImages) -> Teacher:
    return teacher_from_state_dict(
        model.model_id, model.spec, model.state_dict, _names(data, model.classes)
    )


def _members(
    preset: PoisonPreset, pool_cache: Path | None
) -> tuple[list[attacks.Model], ClassImages, dict[str, float]]:
    """The honest pool, its training split, and its broken teachers' hold-out accuracies."""
    train = load_split(preset.dataset, "train")
    pool = build_pool(train, preset.pool, cache_dir=pool_cache, progress=False)
    models = [attacks.Model(m.teacher_id, m.spec, m.state_dict, m.classes) for m in pool]
    broken = {m.teacher_id: m.holdout_accuracy for m in pool if m.holdout_accuracy < BROKEN_BELOW}
    return models, train, broken


def _config_key(preset: PoisonPreset, seed: int, defences: bool | None) -> str:
    """A short hash of what a unit's figures depend on besides the data.

    ``defences=None``: a detection unit, which depends on the screening settings, the
    screening code's :data:`DETECTION_REVISION` and the pool only (a change of FREE's
    training settings leaves it valid).
    """
    config = preset.free_config(seed, defences=bool(defences))
    record: dict[str, Any] = {
        "pool": asdict(preset.pool),
        "levels": list(preset.levels),
        "attack_epochs": preset.attack_epochs,
        "screening": config.to_dict()["screening"],
    }
    if defences is None:
        record["revision"] = DETECTION_REVISION
    else:
        record |= {
            "free": config.to_dict(),
            "shots": list(preset.shots),
            "test_tasks": preset.test_tasks,
            "lrs": list(preset.finetune_lrs),
            "lr_val_tasks": preset.lr_val_tasks,
        }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:10]


def _load(path: Path, key: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    unit: dict[str, Any] = json.loads(path.read_text())
    if unit.get("key") != key:
        logger.warning("%s was measured with other settings: measuring again", path)
        return None
    return unit


def _save(path: Path, unit: dict[str, Any]) -> None:
    """Atomic JSON write (a half-written unit is never taken for a finished one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(unit, indent=1, default=float))
    os.replace(tmp, path)


def _teacher_rows(
    pool: Sequence[attacks.Model], verdicts: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Ground truth and verdict of every teacher of a screened pool."""
    rows = []
    for m in pool:
        verdict = verdicts.get(m.model_id, {})
        rows.append(
            {
                "teacher": m.model_id,
                "arch": m.spec.arch,
                "kind": m.kind,
                "accepted": bool(verdict.get("accepted", True)),
                "reason": verdict.get("reason", ""),
                "failed": sorted({f["check"] for f in verdict.get("findings", []) if f["exclude"]}),
                "suspected_by": sorted(
                    {f["check"] for f in verdict.get("findings", []) if not f["exclude"]}
                ),
                "seconds": float(verdict.get("seconds", 0.0)),
            }
        )
    return rows


def _detection_unit(
    preset: PoisonPreset,
    pool: list[attacks.Model],
    data: ClassImages,
    seed: int,
    work: Path,
    memo: dict[str, ScreenedAlone],
) -> dict[str, Any]:
    """Screen the poisoned pool as the trainer does (no training) and record the verdicts.

    ``memo``: teachers screened alone in earlier units (filled as teachers are measured).
    """
    val = load_split(preset.dataset, "val")
    trainer = FreeTrainer(
        preset.free_config(seed, defences=True),
        InMemoryTeachers([_teacher(m, data) for m in pool]),
        val_data=val,
        test_data=None,
        work_dir=work,
    )
    trainer.screen.memo = memo
    started = time.perf_counter()
    verdicts = trainer.screen_pool()
    return {"rows": _teacher_rows(pool, verdicts), "seconds": time.perf_counter() - started}


def _accuracy_unit(
    preset: PoisonPreset,
    pool: list[attacks.Model],
    data: ClassImages,
    seed: int,
    defences: bool,
    work: Path,
) -> dict[str, Any]:
    """Train FREE on the pool (through ``FreeTrainer``) and meta-test it, tuned protocol."""
    val = load_split(preset.dataset, "val")
    test = load_split(preset.dataset, "test")
    started = time.perf_counter()
    trainer = FreeTrainer(
        preset.free_config(seed, defences=defences),
        InMemoryTeachers([_teacher(m, data) for m in pool]),
        val_data=val,
        test_data=None,
        work_dir=work,
    )
    try:
        result = trainer.train(progress=False)
    except FreeTrainingError as err:  # every teacher excluded: nothing to meta-learn from
        return {"error": str(err), "rows": []}
    trained = time.perf_counter() - started
    protocol = ProtocolSettings(
        test_tasks=preset.test_tasks,
        test_seed=10_000 + seed,
        val_tasks=preset.lr_val_tasks,
        val_seed=20_000 + seed,
        lrs=preset.finetune_lrs,
        protocols=("tuned",),
    )
    n_way = preset.free_config(seed, defences=defences).eval.n_way
    shots: dict[str, Any] = {}
    for shot in preset.shots:
        tuned = meta_test(result.model, val, test, TaskSetting(n_way, shot), protocol)["tuned"]
        shots[str(shot)] = {
            "mean": tuned.result.mean,
            "ci95": tuned.result.ci95,
            "lr": tuned.lr,
            "head": tuned.head,
            "lr_at_edge": tuned.at_edge,
            "accuracies": tuned.accuracies.tolist(),
        }
    sampled: dict[str, int] = {}
    for record in result.history:
        for teacher_id in record.get("teachers", []):
            sampled[teacher_id] = sampled.get(teacher_id, 0) + 1
    kinds = {m.model_id: m.kind for m in pool}
    draws = sum(sampled.values())
    poisoned = sum(n for t, n in sampled.items() if kinds.get(t, "honest") != "honest")
    return {
        "shots": shots,
        "best_iteration": result.best_iteration,
        "best_val": result.best_val,
        "train_seconds": trained,
        "excluded": len(result.excluded),
        "poisoned_draw_share": poisoned / draws if draws else 0.0,
        "rows": _teacher_rows(pool, result.screening) if defences else [],
    }


# ---------------------------------------------------------------------- running the units


def _attack_cache(work_dir: Path, preset_name: str, seed: int) -> Path:
    return work_dir / preset_name / f"attacks-seed{seed}.pt"


def _load_attacks(path: Path) -> dict[int, attacks.Model]:
    if not path.is_file():
        return {}
    rows: list[dict[str, Any]] = torch.load(path, weights_only=False)
    return {int(r.pop("rank")): attacks.Model(**r) for r in rows}


def _store_attacks(path: Path, built: dict[int, attacks.Model]) -> None:
    _torch_save(path, [{"rank": k, **vars(m)} for k, m in sorted(built.items())])


def _torch_save(path: Path, value: object) -> None:
    """Atomic ``torch.save`` (a half-written cache file is never read as a finished one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(value, tmp)
    os.replace(tmp, path)


def _memo_file(work_dir: Path, preset_name: str) -> Path:
    return work_dir / preset_name / "screened-alone.pt"


def _load_memo(path: Path) -> dict[str, ScreenedAlone]:
    if not path.is_file():
        return {}
    memo: dict[str, ScreenedAlone] = torch.load(path, weights_only=False)
    return memo


def _level_name(level: float) -> str:
    return f"level{round(100 * level):02d}"


def run(
    preset_name: str,
    out_dir: Path,
    parts: Sequence[str] = PARTS,
    *,
    pool_cache: Path | None = DEFAULT_CACHE,
    work_dir: Path = CACHE_DIR,
) -> dict[str, Any]:
    """Run (or resume) the preset's units of ``parts``; write the report of every finished unit.

    Args:
        preset_name: a key of :data:`PRESETS`.
        out_dir: where the report goes; finished units are kept in ``out_dir/poison_units``.
        parts: ``"detection"`` and/or ``"accuracy"``.
        pool_cache: the teacher-pool cache (``scripts.bench.teacher_pool``; None: train afresh).
        work_dir: the built attacks and FREE's checkpoints of unfinished units.
    """
    preset = PRESETS[preset_name]
    started = time.perf_counter()
    torch.set_num_threads(1)
    units = out_dir / "poison_units" / preset_name
    members, data, broken = _members(preset, pool_cache)
    memo_file = _memo_file(work_dir, preset_name)
    memo = _load_memo(memo_file) if "detection" in parts else {}
    for seed in preset.seeds:
        cache_file = _attack_cache(work_dir, preset_name, seed)
        built = _load_attacks(cache_file)
        known = len(built)
        for level in preset.levels:
            pool = compose_pool(members, data, level, preset, seed, built)
            if len(built) > known:
                _store_attacks(cache_file, built)
                known = len(built)
            if "detection" in parts:
                known_teachers = len(memo)
                _run_unit(preset, (units, work_dir), pool, data, level, seed, memo=memo)
                if len(memo) > known_teachers:
                    _torch_save(memo_file, memo)
            if "accuracy" in parts:
                for defence in DEFENCES:
                    _run_unit(preset, (units, work_dir), pool, data, level, seed, defence)
    report = collect(preset_name, units, broken)
    report["seconds"] = time.perf_counter() - started  # this call's; unit_seconds: the work
    stem = "poison" if preset_name == "full" else f"poison_{preset_name.replace('-', '_')}"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    (out_dir / f"{stem}.md").write_text(markdown(report, stem))
    plot(report, out_dir / f"{stem}.png")
    return report


def _run_unit(
    preset: PoisonPreset,
    dirs: tuple[Path, Path],
    pool: list[attacks.Model],
    data: ClassImages,
    level: float,
    seed: int,
    defence: str | None = None,
    memo: dict[str, ScreenedAlone] | None = None,
) -> None:
    """Run one unit unless it is already measured with these settings.

    ``defence`` None: the detection unit (``memo``: the teachers screened alone so far);
    ``"on"``/``"off"``: the accuracy unit.
    """
    units, work_dir = dirs
    if defence is None:
        path = units / "detection" / f"{_level_name(level)}-seed{seed}.json"
        work = work_dir / "work" / f"detection-{os.getpid()}"
    else:
        path = units / "accuracy" / f"{_level_name(level)}-defences-{defence}-seed{seed}.json"
        work = work_dir / "work" / path.stem  # FREE checkpoints: a killed unit resumes
    key = _config_key(preset, seed, None if defence is None else defence == "on")
    if _load(path, key) is not None:
        return
    logger.info("%s: %s seed %d", path.parent.name, path.stem, seed)
    if defence is None:
        unit = _detection_unit(preset, pool, data, seed, work, {} if memo is None else memo)
    else:
        unit = {"defences": defence}
        unit |= _accuracy_unit(preset, pool, data, seed, defence == "on", work)
    _save(path, {"key": key, "level": level, "seed": seed, **unit})
    checkpoint = work / "checkpoints" / "latest.pt"
    if checkpoint.is_file():
        checkpoint.unlink()


# ---------------------------------------------------------------------- the report


def _units(units: Path, part: str) -> list[dict[str, Any]]:
    folder = units / part
    return (
        [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
        if folder.is_dir()
        else []
    )


def detection_summary(
    units: Sequence[dict[str, Any]], broken: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """Per attack and per check: detection rates; per check: false positives on honest teachers.

    ``broken``: teacher id -> hold-out accuracy of the honest teachers whose training failed
    (:data:`BROKEN_BELOW`); their rows are reported apart, not as honest.
    """
    broken = broken or {}
    rows = [r for u in units for r in u["rows"]]
    failed_training = [r for r in rows if r["kind"] == "honest" and r["teacher"] in broken]
    honest = [r for r in rows if r["kind"] == "honest" and r["teacher"] not in broken]
    kinds = [k for k in attacks.ATTACKS if any(r["kind"] == k for r in rows)]
    by_attack = {}
    for kind in kinds:
        mine = [r for r in rows if r["kind"] == kind]
        by_attack[kind] = {
            "teachers": len(mine),
            "detected": sum(not r["accepted"] for r in mine),
            "rate": sum(not r["accepted"] for r in mine) / len(mine),
            "suspected": sum(r["accepted"] and bool(r["suspected_by"]) for r in mine),
        }
    by_check = {}
    for check in CHECKS:
        entry: dict[str, Any] = {
            "false_positives": sum(check in r["failed"] for r in honest),
            "false_positive_rate": sum(check in r["failed"] for r in honest) / max(1, len(honest)),
        }
        for kind in kinds:
            mine = [r for r in rows if r["kind"] == kind]
            entry[kind] = sum(check in r["failed"] for r in mine) / len(mine)
        by_check[check] = entry
    seconds: dict[str, list[float]] = {}
    for r in rows:
        seconds.setdefault(r["arch"], []).append(r["seconds"])
    return {
        "units": len(units),
        "honest_teachers": len(honest),
        "honest_excluded": sum(not r["accepted"] for r in honest),
        "false_positive_rate": sum(not r["accepted"] for r in honest) / max(1, len(honest)),
        "honest_suspected": sum(r["accepted"] and bool(r["suspected_by"]) for r in honest),
        "broken": _broken_summary(failed_training, broken),
        "by_attack": by_attack,
        "by_check": by_check,
        "screening_seconds_by_arch": {a: float(np.mean(v)) for a, v in sorted(seconds.items())},
        "goals": {
            "detection": DETECTION_GOAL,
            "false_positive_rate": FALSE_POSITIVE_GOAL,
            "met": bool(
                all(v["rate"] >= DETECTION_GOAL for v in by_attack.values())
                and sum(not r["accepted"] for r in honest) <= FALSE_POSITIVE_GOAL * len(honest)
            ),
        },
    }


def _broken_summary(
    rows: Sequence[dict[str, Any]], broken: Mapping[str, float]
) -> dict[str, dict[str, Any]]:
    """Per failed training that was screened: its hold-out accuracy, pools, exclusions, why."""
    by_teacher: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_teacher.setdefault(r["teacher"], []).append(r)
    return {
        teacher: {
            "holdout_accuracy": broken[teacher],
            "screened": len(mine),
            "excluded": sum(not r["accepted"] for r in mine),
            "reasons": sorted({r["reason"] for r in mine if r["reason"]}),
        }
        for teacher, mine in sorted(by_teacher.items())
    }


def accuracy_summary(units: Sequence[dict[str, Any]], shots: Sequence[int]) -> dict[str, Any]:
    """Per (level, defences): meta-test mean over seeds and the loss against the clean pool."""
    table: dict[str, Any] = {}
    failed = [u for u in units if "error" in u]
    units = [u for u in units if "error" not in u]
    for defence in DEFENCES:
        levels = sorted({u["level"] for u in units if u["defences"] == defence})
        for level in levels:
            mine = [u for u in units if u["defences"] == defence and u["level"] == level]
            cell: dict[str, Any] = {"seeds": sorted(u["seed"] for u in mine)}
            for shot in shots:
                pooled = np.concatenate([u["shots"][str(shot)]["accuracies"] for u in mine])
                per_seed = [u["shots"][str(shot)]["mean"] for u in mine]
                cell[str(shot)] = {
                    "mean": float(np.mean(per_seed)),
                    "ci95": float(1.96 * pooled.std(ddof=1) / np.sqrt(len(pooled)))
                    if len(pooled) > 1
                    else 0.0,
                    "seed_std": float(np.std(per_seed)),
                }
            cell["excluded"] = float(np.mean([u["excluded"] for u in mine]))
            cell["poisoned_draw_share"] = float(np.mean([u["poisoned_draw_share"] for u in mine]))
            table[f"{defence}/{level}"] = cell
    for defence in DEFENCES:
        clean = table.get(f"{defence}/0.0")
        for name, cell in table.items():
            if clean is None or not name.startswith(defence):
                continue
            for shot in shots:
                cell[str(shot)]["loss_points"] = 100 * (
                    clean[str(shot)]["mean"] - cell[str(shot)]["mean"]
                )
    goals = {}
    for level, points in GOALS.items():
        found = table.get(f"on/{float(level)}")
        if found is not None and "1" in found:
            goals[level] = {
                "limit_points": points,
                "loss_points": found["1"].get("loss_points"),
                "met": bool(found["1"].get("loss_points", np.inf) <= points),
            }
    return {
        "table": table,
        "goals": goals,
        "failed": [{k: u[k] for k in ("level", "defences", "seed", "error")} for u in failed],
    }


def collect(
    preset_name: str, units: Path, broken: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """The report of every finished unit of ``preset_name`` under ``units``.

    ``broken``: the pool's honest teachers whose training failed (:func:`detection_summary`).
    """
    preset = PRESETS[preset_name]
    detection = _units(units, "detection")
    accuracy = _units(units, "accuracy")
    screened = detection or [
        {"rows": u["rows"]} for u in accuracy if u["defences"] == "on" and u["rows"]
    ]
    return {
        "preset": preset_name,
        "note": preset.note,
        "pool": asdict(preset.pool),
        "levels": list(preset.levels),
        "seeds": list(preset.seeds),
        "attacks": list(attacks.ATTACKS),
        "free_config": preset.free_config(preset.seeds[0], defences=True).to_dict(),
        "detection": detection_summary(screened, broken) if screened else None,
        "accuracy": accuracy_summary(accuracy, preset.shots) if accuracy else None,
        "units": {"detection": len(detection), "accuracy": len(accuracy)},
        "unit_seconds": {
            "detection": float(sum(u.get("seconds", 0.0) for u in detection)),
            "accuracy": float(sum(u.get("train_seconds", 0.0) for u in accuracy)),
        },
        "host": host_record(torch.device("cpu")),
        "command": f"python -m scripts.bench.poison --preset {preset_name}",
    }


def markdown(report: dict[str, Any], stem: str) -> str:
    """The human report."""
    lines = [
        f"# Poisoned pools (`{report['command']}`)",
        "",
        report["note"],
        "",
        f"Pool: {report['pool']['teachers']} teachers ({', '.join(report['pool']['archs'])}), "
        f"classes drawn from a {report['pool']['vocabulary'] or 'full'}-class vocabulary, "
        f"shared class names; poison levels "
        f"{', '.join(f'{100 * x:g}%' for x in report['levels'])}; "
        f"seeds {report['seeds']}; attacks in turn: {', '.join(report['attacks'])}.",
        "",
    ]
    det = report["detection"]
    if det is not None:
        kinds = list(det["by_attack"])
        lines += [
            "## Detection (screening only, no training)",
            "",
            f"{det['units']} screened pools; honest teachers excluded: "
            f"**{det['honest_excluded']} of {det['honest_teachers']} "
            f"({100 * det['false_positive_rate']:.1f}%)**, suspected {det['honest_suspected']}. "
            f"Goals: every attack detected at >= {100 * DETECTION_GOAL:g}%, honest excluded "
            f"<= {100 * FALSE_POSITIVE_GOAL:g}% ({'met' if det['goals']['met'] else 'NOT met'}).",
            "",
            *_broken_lines(det.get("broken", {})),
            "| attack | teachers | excluded | rate | suspected |",
            "|---|---:|---:|---:|---:|",
        ]
        for kind, a in det["by_attack"].items():
            lines.append(
                f"| {kind} | {a['teachers']} | {a['detected']} | {100 * a['rate']:.0f}% | "
                f"{a['suspected']} |"
            )
        lines += [
            "",
            "Per check: the share of each attack it excludes, and of honest teachers "
            "(false positives):",
            "",
            "| check | " + " | ".join(kinds) + " | honest (FP) |",
            "|---|" + "---:|" * (len(kinds) + 1),
        ]
        for check, c in det["by_check"].items():
            cells = [f"{100 * c[k]:.0f}%" for k in kinds]
            lines.append(
                f"| {check} | " + " | ".join(cells) + f" | {100 * c['false_positive_rate']:.1f}% "
                f"({c['false_positives']}) |"
            )
        lines += [
            "",
            "Screening seconds per teacher: "
            + ", ".join(f"{a} {s:.2f}" for a, s in det["screening_seconds_by_arch"].items())
            + ".",
            "",
        ]
    acc = report["accuracy"]
    if acc is not None:
        lines += [
            "## FREE's meta-test accuracy (tuned protocol)",
            "",
            "Mean over seeds (± 95% CI over the pooled tasks); loss against the clean pool of "
            "the same setting, in points.",
            "",
            "| defences | poison | 5-way 1-shot | loss | 5-way 5-shot | loss | excluded | "
            "poisoned draws |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, cell in acc["table"].items():
            defence, level = name.split("/")
            row = [defence, f"{100 * float(level):g}%"]
            for shot in ("1", "5"):
                if shot in cell:
                    row += [
                        f"{100 * cell[shot]['mean']:.2f} ± {100 * cell[shot]['ci95']:.2f}",
                        f"{cell[shot].get('loss_points', float('nan')):.2f}",
                    ]
                else:
                    row += ["n/a", "n/a"]
            row += [f"{cell['excluded']:.1f}", f"{100 * cell['poisoned_draw_share']:.0f}%"]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        for level, goal in acc["goals"].items():
            lines.append(
                f"- {100 * float(level):g}% poisoned, defences on: 1-shot loss "
                f"{goal['loss_points']:.2f} points (goal <= {goal['limit_points']:g}): "
                f"{'met' if goal['met'] else 'NOT met'}"
            )
        lines.append("")
    lines += [f"![poisoned pools]({stem}.png)", ""]
    return "\n".join(lines)


def _broken_lines(broken: dict[str, dict[str, Any]]) -> list[str]:
    """The report's paragraph on the honest teachers whose training failed."""
    if not broken:
        return []
    named = "; ".join(
        f"{t} (hold-out accuracy {b['holdout_accuracy']:.2f}): excluded in {b['excluded']} of "
        f"{b['screened']} pools" + (f" ({' / '.join(b['reasons'])})" if b["reasons"] else "")
        for t, b in broken.items()
    )
    return [
        f"Not counted as honest: teachers whose training failed (accuracy on their own held-out "
        f"images below {BROKEN_BELOW:g}), which carry little or nothing of their task, so "
        f"excluding them is right: {named}.",
        "",
    ]


def plot(report: dict[str, Any], path: Path) -> None:
    """Accuracy against poison level (left) and detection rate per attack (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    acc = report["accuracy"]
    if acc is not None:
        for defence, style in (("off", "--"), ("on", "-")):
            for shot in ("1", "5"):
                cells = sorted(
                    (float(k.split("/")[1]), v)
                    for k, v in acc["table"].items()
                    if k.startswith(defence) and shot in v
                )
                if cells:
                    left.errorbar(
                        [100 * x for x, _ in cells],
                        [100 * v[shot]["mean"] for _, v in cells],
                        yerr=[100 * v[shot]["ci95"] for _, v in cells],
                        ls=style,
                        marker="o",
                        capsize=3,
                        label=f"{shot}-shot, defences {defence}",
                    )
        left.legend(fontsize=7)
    else:
        left.text(0.5, 0.5, "accuracy part not run", ha="center", va="center")
    left.set_xlabel("poisoned teachers (%)")
    left.set_ylabel("meta-test accuracy (%)")
    left.set_title("FREE on poisoned pools")
    det = report["detection"]
    if det is not None:
        kinds = list(det["by_attack"])
        rates = [100 * det["by_attack"][k]["rate"] for k in kinds]
        right.bar(range(len(kinds)), rates, color="tab:blue")
        right.axhline(100 * DETECTION_GOAL, color="grey", ls="--", lw=0.8)
        right.set_xticks(range(len(kinds)))
        right.set_xticklabels(kinds, rotation=30, ha="right", fontsize=7)
        right.set_ylim(0, 105)
        right.set_ylabel("excluded (%)")
        right.set_title(f"detection; honest excluded {100 * det['false_positive_rate']:.1f}%")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the preset's parts; print the headline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--part", choices=(*PARTS, "both"), default="both")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="teacher pools")
    parser.add_argument("--work-dir", type=Path, default=CACHE_DIR, help="attacks, checkpoints")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parts = PARTS if args.part == "both" else (args.part,)
    report = run(args.preset, args.out, parts, pool_cache=args.cache_dir, work_dir=args.work_dir)
    det, acc = report["detection"], report["accuracy"]
    if det is not None:
        rates = ", ".join(f"{k} {100 * v['rate']:.0f}%" for k, v in det["by_attack"].items())
        print(f"detection: {rates}; honest excluded {100 * det['false_positive_rate']:.1f}%")
    if acc is not None:
        for level, goal in acc["goals"].items():
            print(f"{100 * float(level):g}% poisoned: 1-shot loss {goal['loss_points']:.2f} points")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
