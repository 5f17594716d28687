"""Recovery-speed benchmark: FREE's meta-generator (k steps) against from-scratch inversion.

In one process, on the same teachers: the meta-generator is first meta-trained on the
pool (``meta_iterations`` FIVE iterations; that time is reported separately, as in the
paper). Then, teacher by teacher, a copy of the trained meta-generator recovers the
teacher's task in k Adam steps (the FREE code path, ``MetaGeneratorInverter.invert``),
and a fresh generator (``invert_from_scratch``) runs until the teacher's accuracy on its
recovered images reaches the quality FREE reached on that teacher. Recovery quality = the
teacher's accuracy on the recovered images (their target labels); the bar is 0.9 for both.
Speed-up = mean seconds per recovered task, scratch / FREE. Teachers the generator was
meta-trained on ("in-pool") and teachers it never saw ("held-out") are reported apart.

Writes ``<out>/recovery_speed.json``, ``recovery_speed.md`` and PNG plots; prints the
headline ratio. Usage: ``python -m scripts.bench.recovery --preset quick``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from free_common.config import FreeConfig, InversionConfig
from free_common.free.fidelity import FidelitySettings, recovery_fidelity
from free_common.free.inversion import MetaGeneratorInverter, Recovered
from free_common.free.scratch_inversion import invert_from_scratch
from free_common.free.teachers import Teacher
from free_common.runtime import host_record
from scripts.bench.teacher_pool import (
    DEFAULT_CACHE,
    PoolMember,
    PoolSettings,
    build_pool,
    data_fingerprint,
    load_split,
    member_images,
    teachers_of,
)
from server.plots import save_bars, save_curves, save_image_grid

__all__ = ["PRESETS", "RecoveryPreset", "main", "run"]

logger = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
QUALITY_BAR = 0.9


@dataclass(frozen=True)
class RecoveryPreset:
    """Sizes of one benchmark run.

    Attributes:
        dataset: ``"glyphs"`` or ``"synthetic"``.
        pool: the teacher pool; the first ``meta_teachers`` meta-train the generator.
        meta_teachers: teachers the generator is meta-trained on (in-pool).
        eval_in_pool: in-pool teachers measured (the first ones).
        eval_held_out: held-out teachers measured (right after the in-pool ones).
        meta_iterations: FIVE iterations of meta-training before measuring.
        teachers_per_iteration: teachers per meta-training iteration (4).
        inversion: generator and inner-loop settings (k = ``inner_steps``).
        max_scratch_steps: cap of the from-scratch runs.
        curve_free_k: k values of FREE's quality-vs-steps curve.
        curve_scratch_steps: step budgets of scratch's quality-vs-steps curve.
        curve_teachers: teachers (in-pool and held-out, half each) for the curves.
        fidelity: how the fidelity student is distilled (:mod:`free_common.free.fidelity`).
    """

    dataset: str
    pool: PoolSettings
    meta_teachers: int
    eval_in_pool: int
    eval_held_out: int
    meta_iterations: int
    teachers_per_iteration: int
    inversion: InversionConfig
    max_scratch_steps: int
    curve_free_k: tuple[int, ...]
    curve_scratch_steps: tuple[int, ...]
    curve_teachers: int
    fidelity: FidelitySettings = FidelitySettings()


_CPU_INVERSION = FreeConfig.preset("paper-cpu").inversion

PRESETS: dict[str, RecoveryPreset] = {
    "smoke": RecoveryPreset(
        dataset="synthetic",
        pool=PoolSettings(teachers=4, epochs=8, conv4_width=8),
        meta_teachers=3,
        eval_in_pool=2,
        eval_held_out=1,
        meta_iterations=3,
        teachers_per_iteration=2,
        inversion=replace(
            _CPU_INVERSION, generator_width=4, latent_dim=32, images_per_class=4, scratch_steps=20
        ),
        max_scratch_steps=30,
        curve_free_k=(1, 3),
        curve_scratch_steps=(3, 9),
        curve_teachers=2,
        fidelity=FidelitySettings(steps=5, batch_size=16),
    ),
    "quick": RecoveryPreset(
        dataset="glyphs",
        pool=PoolSettings(teachers=16),
        meta_teachers=12,
        eval_in_pool=6,
        eval_held_out=4,
        meta_iterations=40,
        teachers_per_iteration=4,
        inversion=_CPU_INVERSION,
        max_scratch_steps=600,
        curve_free_k=(1, 2, 3, 5, 8),
        curve_scratch_steps=(5, 10, 20, 40, 80, 160),
        curve_teachers=2,
    ),
    "full": RecoveryPreset(
        dataset="glyphs",
        pool=PoolSettings(teachers=100),
        meta_teachers=90,
        eval_in_pool=20,
        eval_held_out=10,
        meta_iterations=300,
        teachers_per_iteration=4,
        inversion=_CPU_INVERSION,
        max_scratch_steps=1000,
        curve_free_k=(1, 2, 3, 5, 8),
        curve_scratch_steps=(5, 10, 20, 40, 80, 160),
        curve_teachers=4,
    ),
}


@dataclass
class TeacherRow:
    """Measurements on one teacher."""

    teacher_id: str
    held_out: bool
    free_seconds: float
    free_steps: int
    free_quality: float
    free_confidence: float
    untrained_quality: float
    scratch_seconds: float
    scratch_steps: int
    scratch_quality: float
    scratch_confidence: float
    scratch_reached: bool
    budget_seconds: float
    budget_quality: float
    free_fidelity: float
    scratch_fidelity: float
    budget_fidelity: float
    real_fidelity: float
    teacher_holdout: float


@dataclass(frozen=True)
class RealImages:
    """A teacher's own real images, for fidelity (never shown to the inverters).

    Attributes:
        few: ``m`` real training images per class, float in [0, 1], (C*m, 1, S, S): the
            reference a student distilled on as many real images reaches.
        held: its held-out images (the part it chose its epoch on), (M, 1, S, S).
        held_labels: (M,) int64 output indices of ``held``.
        teacher_holdout: the teacher's own accuracy on ``held`` (the ceiling).
    """

    few: torch.Tensor
    held: torch.Tensor
    held_labels: torch.Tensor
    teacher_holdout: float


def real_images(
    data: Any, pool: PoolSettings, member: PoolMember, index: int, per_class: int
) -> RealImages:
    """``member``'s real images: ``per_class`` training images per class and its held-out."""
    train_x, train_y = member_images(data, pool, index, member.classes, "train")
    held_x, held_y = member_images(data, pool, index, member.classes, "held")
    few = torch.cat([train_x[train_y == c][:per_class] for c in range(len(member.classes))])
    return RealImages(few, held_x, held_y, member.holdout_accuracy)


def _fidelity(
    teacher: Teacher, images: torch.Tensor, real: RealImages, preset: RecoveryPreset, seed: int
) -> float:
    return recovery_fidelity(teacher, images, real.held, real.held_labels, preset.fidelity, seed)


def _teacher_rng(seed: int, index: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + index * 101 + salt)


def meta_train(
    inverter: MetaGeneratorInverter,
    teachers: Sequence[Teacher],
    preset: RecoveryPreset,
    rng: torch.Generator,
) -> dict[str, Any]:
    """FIVE meta-training of ``inverter`` on ``teachers`` (no learner: warm-up style)."""
    qualities: list[float] = []
    started = time.perf_counter()
    bar = tqdm(range(preset.meta_iterations), desc="meta-train generator")
    for _ in bar:
        picks = torch.randint(len(teachers), (preset.teachers_per_iteration,), generator=rng)
        recovered = inverter.invert([teachers[i] for i in picks.tolist()], rng)
        qualities.append(float(np.mean([r.accuracy for r in recovered])))
        bar.set_postfix(quality=f"{qualities[-1]:.3f}")
    seconds = time.perf_counter() - started
    return {
        "iterations": preset.meta_iterations,
        "seconds": seconds,
        "seconds_per_iteration": seconds / max(preset.meta_iterations, 1),
        "quality_per_iteration": qualities,
    }


def free_recover(
    trained: MetaGeneratorInverter, teacher: Teacher, rng: torch.Generator
) -> tuple[Recovered, float]:
    """k-step recovery with a copy of the trained meta-generator; (task, seconds)."""
    inverter = copy.deepcopy(trained)
    started = time.perf_counter()
    recovered = inverter.invert([teacher], rng)[0]
    return recovered, time.perf_counter() - started


def measure_teacher(
    trained: MetaGeneratorInverter,
    untrained: MetaGeneratorInverter,
    teacher: Teacher,
    real: RealImages,
    *,
    held_out: bool,
    index: int,
    preset: RecoveryPreset,
    seed: int,
) -> tuple[TeacherRow, Recovered, Recovered]:
    """Recovery with ``trained`` (its own k), then scratch until FREE's quality.

    ``untrained`` is a meta-generator with the same k that was never meta-trained. Every
    recovered set, and ``real.few`` as the reference, is scored by its fidelity on
    ``real``'s held-out images. Returns the row and both recovered tasks.
    """
    free, free_seconds = free_recover(trained, teacher, _teacher_rng(seed, index, 1))
    untrained_task, _ = free_recover(untrained, teacher, _teacher_rng(seed, index, 1))
    scratch = invert_from_scratch(
        teacher,
        preset.inversion,
        _teacher_rng(seed, index, 2),
        steps=preset.max_scratch_steps,
        target_accuracy=free.accuracy,
        check_every=1,
    )
    # The published protocol on the same teacher: scratch at its fixed budget (200 steps in
    # BiDf-MKD / TGR), however early it would have matched FREE's quality.
    budget = invert_from_scratch(
        teacher,
        preset.inversion,
        _teacher_rng(seed, index, 5),
        steps=preset.inversion.scratch_steps,
    )
    row = TeacherRow(
        teacher_id=teacher.teacher_id,
        held_out=held_out,
        free_seconds=free_seconds,
        free_steps=free.steps,
        free_quality=free.accuracy,
        free_confidence=free.confidence,
        untrained_quality=untrained_task.accuracy,
        scratch_seconds=scratch.seconds,
        scratch_steps=scratch.steps,
        scratch_quality=scratch.recovered.accuracy,
        scratch_confidence=scratch.recovered.confidence,
        scratch_reached=scratch.reached,
        budget_seconds=budget.seconds,
        budget_quality=budget.recovered.accuracy,
        free_fidelity=_fidelity(teacher, free.images, real, preset, seed),
        scratch_fidelity=_fidelity(teacher, scratch.recovered.images, real, preset, seed),
        budget_fidelity=_fidelity(teacher, budget.recovered.images, real, preset, seed),
        real_fidelity=_fidelity(teacher, real.few, real, preset, seed),
        teacher_holdout=real.teacher_holdout,
    )
    logger.info(
        "%s%s: FREE %.3f s q=%.3f f=%.3f | scratch %.3f s, %d steps, q=%.3f f=%.3f%s | real f=%.3f",
        teacher.teacher_id,
        " (held-out)" if held_out else "",
        free_seconds,
        free.accuracy,
        row.free_fidelity,
        scratch.seconds,
        scratch.steps,
        scratch.recovered.accuracy,
        row.scratch_fidelity,
        "" if scratch.reached else " (target not reached)",
        row.real_fidelity,
    )
    return row, free, scratch.recovered


def _curve(
    rows: Sequence[tuple[int, list[Recovered], list[float]]],
    teachers: Sequence[tuple[Teacher, RealImages]],
    preset: RecoveryPreset,
    seed: int,
) -> dict[str, list[float]]:
    """Means over ``teachers`` per step budget: quality, confidence, seconds and fidelity."""
    fidelity = [
        float(
            np.mean(
                [
                    _fidelity(t, r.images, real, preset, seed)
                    for (t, real), r in zip(teachers, tasks, strict=True)
                ]
            )
        )
        for _, tasks, _ in rows
    ]
    return {
        "steps": [float(k) for k, _, _ in rows],
        "quality": [float(np.mean([r.accuracy for r in tasks])) for _, tasks, _ in rows],
        "confidence": [float(np.mean([r.confidence for r in tasks])) for _, tasks, _ in rows],
        "seconds": [float(np.mean(seconds)) for _, _, seconds in rows],
        "fidelity": fidelity,
    }


def with_steps(trained: MetaGeneratorInverter, k: int) -> MetaGeneratorInverter:
    """A copy of ``trained`` (weights and outer optimiser) that adapts for ``k`` steps."""
    inverter = MetaGeneratorInverter(replace(trained.config, inner_steps=k), trained.device)
    inverter.load_state_dict(trained.state_dict())
    return inverter


def free_curve(
    trained: MetaGeneratorInverter,
    teachers: Sequence[tuple[Teacher, RealImages]],
    preset: RecoveryPreset,
    seed: int,
) -> dict[str, list[float]]:
    """Mean quality, confidence, seconds and fidelity of the meta-generator for each k.

    The k values are the preset's curve and the generator's own k.
    """
    rows = []
    for k in tqdm(sorted({*preset.curve_free_k, trained.config.inner_steps}), desc="FREE curve"):
        inverter = with_steps(trained, k)
        runs = [
            free_recover(inverter, t, _teacher_rng(seed, i, 3)) for i, (t, _) in enumerate(teachers)
        ]
        rows.append((k, [r for r, _ in runs], [sec for _, sec in runs]))
    return _curve(rows, teachers, preset, seed)


def scratch_curve(
    teachers: Sequence[tuple[Teacher, RealImages]], preset: RecoveryPreset, seed: int
) -> dict[str, list[float]]:
    """Mean quality, confidence, seconds and fidelity of scratch inversion per step budget."""
    rows = []
    for steps in tqdm(preset.curve_scratch_steps, desc="scratch curve"):
        runs = [
            invert_from_scratch(t, preset.inversion, _teacher_rng(seed, i, 4), steps=steps)
            for i, (t, _) in enumerate(teachers)
        ]
        rows.append((steps, [r.recovered for r in runs], [r.seconds for r in runs]))
    return _curve(rows, teachers, preset, seed)


def matched_fidelity(
    free: dict[str, list[float]], scratch: dict[str, list[float]], k: int
) -> dict[str, Any]:
    """Scratch's cheapest budget on its curve whose mean fidelity reaches FREE's at ``k``.

    Returns FREE's fidelity and seconds at ``k`` and, when some scratch budget reaches it,
    that budget's steps, seconds, fidelity and the speed-up (scratch s / FREE s); else
    ``reached`` is False and the speed-up is a lower bound from the largest budget.
    """
    at = free["steps"].index(float(k))
    target, free_s = free["fidelity"][at], free["seconds"][at]
    out: dict[str, Any] = {"k": k, "free_fidelity": target, "free_seconds": free_s}
    for steps, fid, sec in zip(
        scratch["steps"], scratch["fidelity"], scratch["seconds"], strict=True
    ):
        if fid >= target:
            return out | {
                "reached": True,
                "scratch_steps": steps,
                "scratch_seconds": sec,
                "scratch_fidelity": fid,
                "speedup": sec / free_s,
            }
    return out | {
        "reached": False,
        "scratch_steps": scratch["steps"][-1],
        "scratch_seconds": scratch["seconds"][-1],
        "scratch_fidelity": scratch["fidelity"][-1],
        "speedup": scratch["seconds"][-1] / free_s,
    }


def smallest_k(curve: dict[str, list[float]], default: int) -> int:
    """The smallest k whose mean quality on the curve reaches the bar (else ``default``)."""
    for k, quality in zip(curve["steps"], curve["quality"], strict=True):
        if quality >= QUALITY_BAR:
            return int(k)
    return default


def measure_all(
    trained: MetaGeneratorInverter,
    untrained: MetaGeneratorInverter,
    measured: Sequence[tuple[Teacher, RealImages, bool]],
    preset: RecoveryPreset,
    seed: int,
) -> tuple[list[TeacherRow], list[tuple[str, torch.Tensor]]]:
    """Interleaved FREE / scratch measurements on every teacher, plus an image grid."""
    rows: list[TeacherRow] = []
    grid: list[tuple[str, torch.Tensor]] = []
    per = preset.inversion.images_per_class
    k = trained.config.inner_steps
    for index, (teacher, real, is_held) in enumerate(tqdm(measured, desc=f"recovery k={k}")):
        row, free, scratch = measure_teacher(
            trained,
            untrained,
            teacher,
            real,
            held_out=is_held,
            index=index,
            preset=preset,
            seed=seed,
        )
        rows.append(row)
        if len(grid) < 16:
            tag = f"{teacher.teacher_id}{' (h)' if is_held else ''}"
            grid += [(f"{tag} FREE", free.images[::per]), (f"{tag} scratch", scratch.images[::per])]
    return rows, grid


def summarise(rows: Sequence[TeacherRow]) -> dict[str, Any]:
    """Means over teachers and the speed-up (mean scratch seconds / mean FREE seconds)."""
    if not rows:
        return {}
    free_s = float(np.mean([r.free_seconds for r in rows]))
    scratch_s = float(np.mean([r.scratch_seconds for r in rows]))
    budget_s = float(np.mean([r.budget_seconds for r in rows]))
    return {
        "teachers": len(rows),
        "speedup": scratch_s / free_s,
        "published_budget_speedup": budget_s / free_s,
        "published_budget_seconds_per_task": budget_s,
        "published_budget_quality": float(np.mean([r.budget_quality for r in rows])),
        "free_seconds_per_task": free_s,
        "scratch_seconds_per_task": scratch_s,
        "free_steps": float(np.mean([r.free_steps for r in rows])),
        "scratch_steps": float(np.mean([r.scratch_steps for r in rows])),
        "free_quality": float(np.mean([r.free_quality for r in rows])),
        "scratch_quality": float(np.mean([r.scratch_quality for r in rows])),
        "free_confidence": float(np.mean([r.free_confidence for r in rows])),
        "scratch_confidence": float(np.mean([r.scratch_confidence for r in rows])),
        "untrained_generator_quality": float(np.mean([r.untrained_quality for r in rows])),
        "free_min_quality": float(np.min([r.free_quality for r in rows])),
        "scratch_reached_fraction": float(np.mean([r.scratch_reached for r in rows])),
        "free_fidelity": float(np.mean([r.free_fidelity for r in rows])),
        "scratch_fidelity": float(np.mean([r.scratch_fidelity for r in rows])),
        "published_budget_fidelity": float(np.mean([r.budget_fidelity for r in rows])),
        "real_fidelity": float(np.mean([r.real_fidelity for r in rows])),
        "teacher_holdout": float(np.mean([r.teacher_holdout for r in rows])),
    }


GROUPS: tuple[str, ...] = ("all", "in_pool", "held_out")


def _group_rows(
    summary: dict[str, Any], k: int, cells: Callable[[dict[str, Any]], str]
) -> list[str]:
    """One table row per teacher group that has a summary: name, n, k, then ``cells``."""
    return [
        f"| {name.replace('_', '-')} | {s['teachers']} | {k} | {cells(s)} |"
        for name in GROUPS
        if (s := summary.get(name))
    ]


def _table_rows(summary: dict[str, Any], k: int) -> list[str]:
    return _group_rows(
        summary,
        k,
        lambda s: (
            f"{s['free_seconds_per_task']:.3f} | {s['free_quality']:.3f} "
            f"| {s['free_confidence']:.3f} | {s['scratch_seconds_per_task']:.3f} "
            f"| {s['scratch_steps']:.1f} | {s['scratch_quality']:.3f} "
            f"| {s['scratch_confidence']:.3f} | {s['untrained_generator_quality']:.3f} "
            f"| **{s['speedup']:.1f}x**"
        ),
    )


def markdown(report: dict[str, Any]) -> str:
    """The human-readable table of ``report`` (generated, never typed by hand)."""
    inv = report["inversion"]
    lines = [
        f"Recovery speed, preset `{report['preset']}` ({report['dataset']}, "
        f"{report['device']}, {report['threads']} thread(s); generator width "
        f"{inv['generator_width']}, {inv['images_per_class']} images per class). Quality = "
        "teacher accuracy on the recovered images; scratch runs until it matches FREE's "
        "quality on each teacher. Seconds are per recovered task.",
        "",
        "| teachers | n | FREE k | FREE s | FREE quality | FREE conf. | scratch s "
        "| scratch steps | scratch quality | scratch conf. | untrained gen. quality | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *_table_rows(report["summary"], inv["inner_steps"]),
    ]
    fast = report.get("smallest_k_meeting_bar", {})
    if "summary" in fast:
        lines += _table_rows(fast["summary"], fast["k"])
    meta = report["meta_training"]
    overall = report["summary"]["all"]
    lines += [
        "",
        f"Published protocol, not the headline: scratch at its fixed budget of "
        f"{inv['scratch_steps']} steps takes {overall['published_budget_seconds_per_task']:.3f} s "
        f"per task (quality {overall['published_budget_quality']:.3f}) on the same teachers, "
        f"{overall['published_budget_speedup']:.1f}x FREE's time at k = {inv['inner_steps']}; "
        "most of those steps buy nothing the quality measure can see.",
        "",
        f"Meta-training of the generator (not counted per task): {meta['iterations']} "
        f"iterations, {meta['seconds']:.1f} s ({meta['seconds_per_iteration']:.3f} s each). "
        f"Smallest k whose mean quality reaches the bar on the curve teachers: "
        f"{fast.get('k', 'n/a')}. Quality bar {report['quality_bar']} (both methods): "
        f"{'met' if report['meets_quality_bar'] else 'NOT met'}. The published budgets "
        f"(scratch {inv['scratch_steps']} steps vs FREE {inv['inner_steps']}) differ by "
        f"{report['published_budget_steps_ratio']:.0f}x in steps.",
    ]
    if "fidelity" in report:
        lines += fidelity_markdown(report)
    return "\n".join(lines) + "\n"


def _fidelity_rows(summary: dict[str, Any], k: int) -> list[str]:
    return _group_rows(
        summary,
        k,
        lambda s: (
            f"{s['free_fidelity']:.3f} | {s['scratch_fidelity']:.3f} "
            f"| {s['published_budget_fidelity']:.3f} | {s['real_fidelity']:.3f} "
            f"| {s['teacher_holdout']:.3f}"
        ),
    )


def _matched_fidelity_line(matched: dict[str, Any], teachers: int) -> str:
    head = (
        f"On the {teachers} curve teachers FREE at k = {matched['k']} reaches fidelity "
        f"{matched['free_fidelity']:.3f} in {matched['free_seconds']:.3f} s per task; "
    )
    if matched["reached"]:
        return head + (
            f"scratch first reaches it at {matched['scratch_steps']:.0f} steps "
            f"({matched['scratch_seconds']:.3f} s, fidelity {matched['scratch_fidelity']:.3f}): "
            f"**{matched['speedup']:.1f}x** at matched fidelity."
        )
    return head + (
        f"scratch does not reach it within {matched['scratch_steps']:.0f} steps "
        f"({matched['scratch_seconds']:.3f} s, fidelity {matched['scratch_fidelity']:.3f}): "
        f"more than **{matched['speedup']:.1f}x** at matched fidelity."
    )


def fidelity_markdown(report: dict[str, Any]) -> list[str]:
    """The fidelity table and the matched-fidelity line of ``report``."""
    fid = report["fidelity"]
    inv = report["inversion"]
    chance = 1 / report["pool"]["classes_per_teacher"]
    return [
        "",
        f"Fidelity = accuracy on the teacher's real held-out images of a fresh student with "
        f"the teacher's architecture distilled only on the recovered images "
        f"({fid['settings']['steps']} Adam steps, temperature "
        f"{fid['settings']['temperature']:g}, random crops); chance {chance:.2f}. 'Scratch' is "
        f"the matched-quality run above, '{inv['scratch_steps']} steps' the published budget, "
        "'real' a student "
        "distilled on as many real training images of the teacher's classes, 'teacher' the "
        "teacher's own held-out accuracy.",
        "",
        f"| teachers | n | FREE k | FREE | scratch | {inv['scratch_steps']} steps "
        "| real | teacher |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *_fidelity_rows(report["summary"], report["inversion"]["inner_steps"]),
        "",
        _matched_fidelity_line(fid["matched"], fid["curve_teachers"]),
    ]


def headline(report: dict[str, Any]) -> str:
    """One line for the pages' goal rows (quoted inline, generated with the report)."""
    overall = report["summary"]["all"]
    matched = report["fidelity"]["matched"]
    bound = "" if matched["reached"] else "more than "
    return (
        f"{report['speedup']:.1f}x at matched quality ({overall['teachers']} teachers, "
        f"{report['dataset']}, quality ≥ {report['quality_bar']} for both); "
        f"{bound}{matched['speedup']:.1f}x at matched fidelity "
        f"({report['fidelity']['curve_teachers']} curve teachers, FREE "
        f"{matched['free_fidelity']:.2f}); {overall['published_budget_speedup']:.1f}x timed "
        f"the paper's way ({report['inversion']['scratch_steps']} scratch steps against "
        f"FREE's {report['inversion']['inner_steps']}); fidelity on the {overall['teachers']} "
        f"teachers: FREE {overall['free_fidelity']:.2f}, scratch at matched quality "
        f"{overall['scratch_fidelity']:.2f}, at {report['inversion']['scratch_steps']} steps "
        f"{overall['published_budget_fidelity']:.2f}, as many real images "
        f"{overall['real_fidelity']:.2f}"
    )


def _summaries(rows: Sequence[TeacherRow]) -> dict[str, Any]:
    return {
        "all": summarise(rows),
        "in_pool": summarise([r for r in rows if not r.held_out]),
        "held_out": summarise([r for r in rows if r.held_out]),
    }


def run(preset_name: str, out_dir: Path, seed: int, cache_dir: Path | None) -> dict[str, Any]:
    """Run the benchmark and write its JSON, markdown and plots; returns the report."""
    preset = PRESETS[preset_name]
    load_before = os.getloadavg()
    device = torch.device("cpu")
    train = load_split(preset.dataset, "train")
    members = build_pool(train, preset.pool, cache_dir=cache_dir)
    teachers = teachers_of(members)
    need = preset.meta_teachers + preset.eval_held_out
    if len(teachers) < need or preset.eval_in_pool > preset.meta_teachers:
        raise ValueError(f"preset {preset_name}: pool of {len(teachers)} is too small")
    pool = teachers[: preset.meta_teachers]

    torch.manual_seed(seed)
    untrained = MetaGeneratorInverter(preset.inversion, device)
    trained = copy.deepcopy(untrained)
    meta = meta_train(trained, pool, preset, torch.Generator().manual_seed(seed))
    free_recover(trained, pool[0], _teacher_rng(seed, 0, 0))  # warm-up, untimed

    half = max(preset.curve_teachers // 2, 1)
    n_pool = preset.meta_teachers
    curve_rows = list(range(half)) + list(range(n_pool, n_pool + preset.curve_teachers - half))
    measured_rows = list(range(preset.eval_in_pool)) + list(range(n_pool, need))
    per = preset.inversion.images_per_class
    reals = {  # real images of the teachers measured only
        i: real_images(train, preset.pool, members[i], i, per)
        for i in sorted({*curve_rows, *measured_rows})
    }
    curve_teachers = [(teachers[i], reals[i]) for i in curve_rows]
    curves = {"FREE (meta-generator)": free_curve(trained, curve_teachers, preset, seed)}
    k_min = smallest_k(curves["FREE (meta-generator)"], preset.inversion.inner_steps)

    measured = [(teachers[i], reals[i], i >= n_pool) for i in measured_rows]
    rows, grid = measure_all(trained, untrained, measured, preset, seed)
    summary = _summaries(rows)
    fast: dict[str, Any] = {"k": k_min}
    if k_min != preset.inversion.inner_steps:
        fast_rows, _ = measure_all(
            with_steps(trained, k_min), with_steps(untrained, k_min), measured, preset, seed
        )
        fast.update(summary=_summaries(fast_rows), per_teacher=[asdict(r) for r in fast_rows])
    curves["from scratch"] = scratch_curve(curve_teachers, preset, seed)
    k = preset.inversion.inner_steps
    fidelity = {
        "settings": asdict(preset.fidelity),
        "curve_teachers": len(curve_teachers),
        "matched": matched_fidelity(curves["FREE (meta-generator)"], curves["from scratch"], k),
    }
    overall = summary["all"]
    report: dict[str, Any] = {
        "benchmark": "recovery_speed",
        "preset": preset_name,
        "seed": seed,
        "dataset": preset.dataset,
        "data_fingerprint": data_fingerprint(train),
        "speedup": overall["speedup"],
        "free_quality": overall["free_quality"],
        "scratch_quality": overall["scratch_quality"],
        "quality_bar": QUALITY_BAR,
        "meets_quality_bar": bool(
            overall["free_quality"] >= QUALITY_BAR and overall["scratch_quality"] >= QUALITY_BAR
        ),
        "summary": summary,
        "per_teacher": [asdict(r) for r in rows],
        "smallest_k_meeting_bar": fast,
        "published_budget_steps_ratio": preset.inversion.scratch_steps
        / preset.inversion.inner_steps,
        "published_budget_speedup": overall["published_budget_speedup"],
        "meta_training": meta,
        "curves": curves,
        "fidelity": fidelity,
        "inversion": asdict(preset.inversion),
        "pool": {**asdict(preset.pool), "meta_teachers": preset.meta_teachers},
        **host_record(device),
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "recovery_speed.json").write_text(json.dumps(report, indent=2))
    (out_dir / "recovery_speed.md").write_text(markdown(report))
    (out_dir / "recovery_headline.md").write_text(headline(report) + "\n")
    _plots(report, grid, out_dir)
    return report


def _plots(report: dict[str, Any], grid: list[tuple[str, torch.Tensor]], out_dir: Path) -> None:
    curves = report["curves"]
    save_curves(
        {n: (c["steps"], c["quality"]) for n, c in curves.items()},
        out_dir / "recovery_quality_vs_steps.png",
        xlabel="generator Adam steps",
        ylabel="teacher accuracy on recovered images",
        title="Recovery quality against steps (mean over teachers)",
        hline=QUALITY_BAR,
        logx=True,
    )
    save_curves(
        {n: (c["seconds"], c["quality"]) for n, c in curves.items()},
        out_dir / "recovery_quality_vs_time.png",
        xlabel="wall time per task (s)",
        ylabel="teacher accuracy on recovered images",
        title="Recovery quality against wall time (mean over teachers)",
        hline=QUALITY_BAR,
        logx=True,
    )
    save_curves(
        {n: (c["seconds"], c["fidelity"]) for n, c in curves.items()},
        out_dir / "recovery_fidelity_vs_time.png",
        xlabel="wall time per task (s)",
        ylabel="fidelity (student on real held-out)",
        title="Recovery fidelity against wall time (mean over curve teachers)",
        logx=True,
    )
    s = report["summary"]["all"]
    save_bars(
        {
            "FREE (k steps)": s["free_seconds_per_task"],
            "from scratch": s["scratch_seconds_per_task"],
        },
        out_dir / "recovery_speed.png",
        ylabel="seconds per recovered task",
        title=f"Matched-quality recovery: {s['speedup']:.1f}x",
        logy=True,
    )
    save_image_grid(grid, out_dir / "recovery_images.png", title="one image per class")


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--preset smoke|quick|full``, ``--out``, ``--seed``, ``--cache-dir``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    report = run(args.preset, args.out, args.seed, args.cache_dir)
    s = report["summary"]
    print(
        f"recovery speed-up (matched quality): {report['speedup']:.1f}x | FREE "
        f"{s['all']['free_seconds_per_task']:.3f} s/task q={report['free_quality']:.3f} | "
        f"scratch {s['all']['scratch_seconds_per_task']:.3f} s/task "
        f"q={report['scratch_quality']:.3f} | held-out "
        f"{s['held_out'].get('speedup', float('nan')):.1f}x | quality bar "
        f"{'met' if report['meets_quality_bar'] else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
