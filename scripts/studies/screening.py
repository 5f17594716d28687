"""Screening measured: honest teachers kept, corrupted ones caught, the old criterion, the cost.

Parts (each a key of the JSON written to ``<out>/screening.json``, with a markdown report
``screening.md`` beside it):

- ``honest``: every teacher of these pools screened by ``server.trust.PoolScreen`` with the
  default ``ScreeningConfig``, as the FREE trainer screens them: the main job's 20 owners
  (``scripts.bench.main_job_owners``: glyph owners trained as ``client/owner.py`` trains them,
  Conv4-32, ResNet-10/18 at width 16) for each run seed, private class names as in the
  main job; and the cached benchmark pools of 100 teachers (``scripts.bench.teacher_pool``):
  Conv4, Conv4 + ResNet-10 + ResNet-18, and the mixed pool drawn from a 100-class
  vocabulary with shared class names (the label-agreement check runs there). Goal: none
  excluded. Each row carries the teacher's accuracy on its own held-out images, so an
  exclusion of a model that never learned its classes (a failed local training, which a
  pool should not use either) is told apart from one of a working model.
- ``corrupted``: each seed-0 owner with a random initialisation, its weights shuffled
  within each tensor, and Gaussian noise of 1x each tensor's std, screened alone.
- ``old_criterion``: the screening this replaces (a fresh width-16 generator, 30 Adam
  steps, 8 images per class; accept at recovery accuracy >= 0.8 and confidence >= 0.7)
  on the main job's owners.
- ``cost``: screening seconds per teacher by architecture, and FREE's own iterations
  (the ``paper-cpu`` preset) on the seed-0 owners in the same process.
- ``backdoor_search``: the best trigger search tried (a 6x6 patch in each corner
  optimised towards each class on 8 probe images, 15 Adam steps) on the seed-0 owners and
  on backdoored copies of every other one: the share of probes a patch moves, honest
  against backdoored; and a free-form mask search (Neural Cleanse's anomaly of the
  smallest trigger) on the same teachers (why no backdoor check is in the screening).

Usage: ``python -m scripts.studies.screening [--seeds 0,1,2] [--out scripts/results]``;
``--parts honest`` measures that part again and keeps the others from the JSON already
there (the summary and the report are rebuilt from all of them).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from free_common.config import FreeConfig, ScreeningConfig
from free_common.data.base import ClassImages
from free_common.data.glyphs import load_glyphs
from free_common.free.augment import to_model_input
from free_common.free.scratch_inversion import invert_from_scratch
from free_common.free.screening import screen_teacher
from free_common.free.teachers import InMemoryTeachers, Teacher, teacher_from_state_dict
from free_common.free.trust.checks import (
    label_agreements,
    matched_correlation,
    standardised,
    top_class_share,
)
from free_common.free.trust.probes import probe_images
from free_common.models import build_model
from free_common.runtime import host_record
from scripts.bench import poison_attacks
from scripts.bench.main_job_owners import Owner, main_job_owners
from scripts.bench.teacher_pool import PoolSettings, build_pool, load_split
from server.free_training import FreeTrainer
from server.trust import PoolScreen

logger = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
BENCH_POOLS: dict[str, PoolSettings] = {
    "conv4-100": PoolSettings(archs=("conv4",), teachers=100),
    "mixed-100": PoolSettings(archs=("conv4", "resnet10", "resnet18"), teachers=100),
    "mixed-100-vocab100": PoolSettings(
        archs=("conv4", "resnet10", "resnet18"), teachers=100, vocabulary=100
    ),
}
OLD_STEPS, OLD_IMAGES, OLD_ACCURACY, OLD_CONFIDENCE = 30, 8, 0.8, 0.7


def _figures(
    screen: PoolScreen, order: Sequence[str], arch: dict[str, str]
) -> list[dict[str, Any]]:
    """One row per teacher: its verdict and every figure the checks look at."""
    z = {t: standardised(fp.logits) for t, fp in screen.fingerprints.items()}
    rows = []
    for position, teacher_id in enumerate(order):
        verdict = screen.verdicts[teacher_id]
        fp = screen.fingerprints.get(teacher_id)
        row: dict[str, Any] = {
            "teacher": teacher_id,
            "arch": arch[teacher_id],
            "accepted": verdict["accepted"],
            "reason": verdict["reason"],
            "suspected": verdict["suspected"],
            "seconds": verdict["seconds"],
        }
        if fp is not None:
            earlier = [t for t in order[:position] if t in z]
            row |= {
                "recovery_accuracy": fp.recovery.accuracy if fp.recovery else None,
                "recovery_confidence": fp.recovery.confidence if fp.recovery else None,
                "top_class_share": top_class_share(fp.logits)[0],
                "max_abs_logit": fp.max_abs_logit,
                "weight_norm": fp.weight_norm,
                "max_duplicate_correlation": max(
                    (
                        matched_correlation(z[teacher_id].T @ z[t] / fp.logits.shape[0])
                        for t in earlier
                        if z[t].shape[1] == z[teacher_id].shape[1]
                    ),
                    default=None,
                ),
                "max_weight_similarity": max(
                    (
                        float(fp.sketch @ screen.fingerprints[t].sketch)
                        for t in earlier
                        if screen.fingerprints[t].spec == fp.spec
                    ),
                    default=None,
                ),
            }
        rows.append(row)
    return rows


LEARNED = 0.5
"""Hold-out accuracy from which a 5-way teacher counts as having learned its classes."""


def _screen_pool(
    teachers: list[Teacher],
    probes: Tensor,
    config: ScreeningConfig,
    holdout: dict[str, float],
) -> tuple[PoolScreen, list[dict[str, Any]]]:
    source = InMemoryTeachers(teachers)
    screen = PoolScreen(config, probes, max_classes=5)
    screen.screen(source.ids(), source.load)
    arch = {t.teacher_id: t.spec.arch for t in teachers}
    rows = _figures(screen, source.ids(), arch)
    for row in rows:
        row["holdout_accuracy"] = holdout[row["teacher"]]
    return screen, rows


def measure_honest(seeds: Sequence[int], probes: Tensor, config: ScreeningConfig) -> dict[str, Any]:
    """Verdicts on the main job's owners (per seed) and on the cached benchmark pools."""
    out: dict[str, Any] = {}
    for seed in seeds:
        owners = main_job_owners(seed)
        teachers = [o.teacher() for o in owners]
        holdout = {t.teacher_id: o.holdout_accuracy for t, o in zip(teachers, owners, strict=True)}
        _, rows = _screen_pool(teachers, probes, config, holdout)
        out[f"main-job-seed{seed}"] = {"rows": rows}
        logger.info("main job seed %d: %d excluded", seed, sum(not r["accepted"] for r in rows))
    train = load_split("glyphs", "train")
    for name, settings in BENCH_POOLS.items():
        members = build_pool(train, settings, progress=False)
        shared = settings.vocabulary > 0
        teachers = [
            teacher_from_state_dict(
                m.teacher_id,
                m.spec,
                m.state_dict,
                [f"label:{train.class_names[c]}" for c in m.classes] if shared else None,
            )
            for m in members
        ]
        holdout = {m.teacher_id: m.holdout_accuracy for m in members}
        screen, rows = _screen_pool(teachers, probes, config, holdout)
        entry: dict[str, Any] = {"rows": rows, "shared_names": shared}
        if shared:
            agreements = label_agreements(list(screen.fingerprints.values()))
            for row in rows:
                a = agreements.get(row["teacher"])
                row["label_margin"] = a.margin if a is not None and a.pairs else None
                row["label_correlation"] = a.correlation if a is not None and a.pairs else None
        out[name] = entry
        logger.info("%s: %d excluded", name, sum(not r["accepted"] for r in rows))
    return out


def _corruptions(owner: Owner, seed: int) -> dict[str, dict[str, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    noisy, shuffled = {}, {}
    for name, value in owner.state_dict.items():
        weight = value.is_floating_point() and "running" not in name and value.numel() > 1
        noisy[name] = (
            value + torch.randn(value.shape, generator=g) * value.std() if weight else value
        )
        perm = torch.randperm(value.numel(), generator=g)
        shuffled[name] = value.flatten()[perm].view_as(value) if weight else value
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random = build_model(owner.spec).state_dict()
    return {"random_init": random, "shuffled": shuffled, "noise_1x_std": noisy}


def measure_corrupted(probes: Tensor, config: ScreeningConfig) -> list[dict[str, Any]]:
    """Each seed-0 owner, corrupted three ways, screened alone."""
    rows = []
    for k, owner in enumerate(main_job_owners(0)):
        for kind, state in _corruptions(owner, 100 + k).items():
            teacher = teacher_from_state_dict(f"{owner.owner_id}-{kind}", owner.spec, state)
            result = screen_teacher(teacher, config, probes, max_classes=5)
            rows.append(
                {
                    "owner": owner.owner_id,
                    "arch": owner.spec.arch,
                    "kind": kind,
                    "accepted": result.accepted,
                    "reason": result.reason,
                    "recovery_accuracy": result.accuracy,
                    "recovery_confidence": result.confidence,
                }
            )
    return rows


def measure_old_criterion(seeds: Sequence[int]) -> list[dict[str, Any]]:
    """The replaced screening (generator inversion from scratch) on the main job's owners."""
    inversion = FreeConfig.preset("paper-cpu").inversion
    rows = []
    for seed in seeds:
        for owner in main_job_owners(seed):
            teacher = owner.teacher()
            started = time.perf_counter()
            result = invert_from_scratch(
                teacher,
                inversion,
                torch.Generator().manual_seed(seed),
                steps=OLD_STEPS,
                images_per_class=OLD_IMAGES,
            )
            acc, conf = result.recovered.accuracy, result.recovered.confidence
            rows.append(
                {
                    "seed": seed,
                    "owner": owner.owner_id,
                    "arch": owner.spec.arch,
                    "recovery_accuracy": acc,
                    "recovery_confidence": conf,
                    "accepted": acc >= OLD_ACCURACY and conf >= OLD_CONFIDENCE,
                    "seconds": time.perf_counter() - started,
                }
            )
    return rows


def measure_free_iterations(val: ClassImages) -> dict[str, Any]:
    """Seconds of FREE's iterations (``paper-cpu`` preset, screening off) on the seed-0 owners."""
    import tempfile

    cpu = FreeConfig.preset("paper-cpu")
    config = replace(
        cpu,
        iterations=cpu.warmup + 4,
        checkpoint_every=1000,
        eval=replace(cpu.eval, every=1000, val_tasks=1),
        screening=replace(cpu.screening, enabled=False),
    )
    source = InMemoryTeachers([o.teacher() for o in main_job_owners(0)])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = FreeTrainer(config, source, val_data=val, test_data=None, work_dir=Path(tmp))
        result = trainer.train(progress=False)
    iterations = [h for h in result.history if h.get("kind") == "iteration"]
    parts = ("inversion_seconds", "distill_seconds", "replay_seconds")
    seconds = [sum(float(h.get(p, 0.0)) for p in parts) for h in iterations]
    warm = [s for s, h in zip(seconds, iterations, strict=True) if h["warmup"]]
    post = [s for s, h in zip(seconds, iterations, strict=True) if not h["warmup"]]
    main_job = cpu.warmup * float(np.mean(warm)) + (cpu.iterations - cpu.warmup) * float(
        np.mean(post)
    )
    return {
        "warmup_iteration_s": float(np.mean(warm)),
        "iteration_s": float(np.mean(post)),
        "main_job_free_training_s": main_job,
        "iterations": cpu.iterations,
        "warmup": cpu.warmup,
    }


def _corner_search(teacher: Teacher, probes: Tensor, *, window: int = 6, steps: int = 15) -> float:
    """Largest share of probes (not already of the class) a corner patch sends to a class."""
    spec = teacher.spec
    size = probes.shape[-1]
    classes, n = spec.num_classes, probes.shape[0]
    far = size - window - 1
    corners = [(1, 1), (1, far), (far, 1), (far, far)]
    patches = torch.zeros((len(corners), classes, 1, window, window), requires_grad=True)
    optimizer = torch.optim.Adam([patches], lr=0.3)
    targets = torch.arange(classes).repeat_interleave(n).repeat(len(corners))

    def stamp(logit_patches: Tensor) -> Tensor:
        out = []
        for index, (row, col) in enumerate(corners):
            images = probes.unsqueeze(0).repeat(classes, 1, 1, 1, 1).clone()
            patch = torch.sigmoid(logit_patches[index]).unsqueeze(1).expand(-1, n, -1, -1, -1)
            images[..., row : row + window, col : col + window] = patch
            out.append(images.reshape(classes * n, *probes.shape[1:]))
        return to_model_input(torch.cat(out), spec.image_size, spec.in_channels)

    for _ in range(steps):
        loss = F.cross_entropy(teacher.model(stamp(patches)), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    with torch.no_grad():
        moved = teacher.model(stamp(patches)).argmax(1).view(len(corners), classes, n)
        own = teacher.model(to_model_input(probes, spec.image_size, spec.in_channels)).argmax(1)
    best = 0.0
    for index in range(len(corners)):
        for c in range(classes):
            others = own != c
            if bool(others.any()):
                best = max(best, float((moved[index, c][others] == c).float().mean()))
    return best


def _mask_search(teacher: Teacher, probes: Tensor, *, steps: int = 60, lam: float = 0.01) -> float:
    """Neural-Cleanse-style anomaly: the smallest class's trigger mask over the others' median.

    For every class at once, a free-form mask (1, H, W) and pattern (C, H, W), both through a
    sigmoid, are optimised (Adam, lr 0.1, ``steps`` steps) so that the stamped probes go to
    the class while the mask's L1 size (weighted ``lam``) stays small; a backdoor's target
    should need a much smaller mask than the other classes (Wang et al., "Neural Cleanse",
    IEEE S&P 2019). Returns min size / median of the other sizes (small: suspicious).
    """
    spec = teacher.spec
    images = to_model_input(probes, spec.image_size, spec.in_channels)
    n, channels, height, width = images.shape
    classes = spec.num_classes
    mask = torch.full((classes, 1, height, width), -3.0, requires_grad=True)
    pattern = torch.zeros((classes, channels, height, width), requires_grad=True)
    optimizer = torch.optim.Adam([mask, pattern], lr=0.1)
    targets = torch.arange(classes).repeat_interleave(n)
    for _ in range(steps):
        m, p = torch.sigmoid(mask), torch.sigmoid(pattern)
        stamped = (1 - m[:, None]) * images[None] + (m * p)[:, None]
        ce = F.cross_entropy(
            teacher.model(stamped.reshape(classes * n, *images.shape[1:])), targets
        )
        loss = ce + lam * m.flatten(1).sum(1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    sizes = torch.sigmoid(mask).detach().flatten(1).sum(1)
    smallest = int(sizes.argmin())
    others = torch.cat([sizes[:smallest], sizes[smallest + 1 :]])
    return float(sizes[smallest] / others.median())


def measure_backdoor_search(probes: Tensor) -> list[dict[str, Any]]:
    """The corner search on the seed-0 owners and on backdoored versions of every other one."""
    train = load_glyphs("train")
    rng = np.random.default_rng(0)
    rows = []
    for k, owner in enumerate(main_job_owners(0)):
        model = poison_attacks.Model(
            owner.owner_id,
            owner.spec,
            owner.state_dict,
            tuple(train.class_names.index(n) for n in owner.class_names),
        )
        candidates = [model]
        if k % 2 == 0:
            candidates.append(
                poison_attacks.backdoored(model, train, rng, model_id=f"{owner.owner_id}-bd")
            )
        for m in candidates:
            teacher = teacher_from_state_dict(m.model_id, m.spec, m.state_dict)
            started = time.perf_counter()
            rate = _corner_search(teacher, probes[:8])
            seconds = time.perf_counter() - started
            started = time.perf_counter()
            ratio = _mask_search(teacher, probes[:48])
            rows.append(
                {
                    "teacher": m.model_id,
                    "arch": m.spec.arch,
                    "kind": m.kind,
                    "moved_share": rate,
                    "seconds": seconds,
                    "mask_ratio": ratio,
                    "mask_seconds": time.perf_counter() - started,
                }
            )
    return rows


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    honest = [r for pool in report["honest"].values() for r in pool["rows"]]
    by_arch: dict[str, dict[str, Any]] = {}
    for arch in sorted({r["arch"] for r in honest}):
        rows = [r for r in honest if r["arch"] == arch and r.get("recovery_accuracy") is not None]
        by_arch[arch] = {
            "teachers": len(rows),
            "excluded": sum(not r["accepted"] for r in rows),
            "min_recovery_accuracy": min(r["recovery_accuracy"] for r in rows),
            "min_recovery_confidence": min(r["recovery_confidence"] for r in rows),
            "max_top_class_share": max(r["top_class_share"] for r in rows),
            "max_abs_logit": max(r["max_abs_logit"] for r in rows),
            "max_duplicate_correlation": max((r["max_duplicate_correlation"] or 0.0) for r in rows),
            "max_weight_similarity": max((r["max_weight_similarity"] or 0.0) for r in rows),
        }
    margins = [r["label_margin"] for r in honest if r.get("label_margin") is not None]
    correlations = [
        r["label_correlation"] for r in honest if r.get("label_correlation") is not None
    ]
    main_job = [
        r for k, pool in report["honest"].items() if k.startswith("main-job") for r in pool["rows"]
    ]
    seconds = {
        arch: float(np.mean([r["seconds"] for r in main_job if r["arch"] == arch]))
        for arch in sorted({r["arch"] for r in main_job})
    }
    seed0 = list(report["honest"].get("main-job-seed0", {"rows": []})["rows"])
    screen_total = sum(r["seconds"] for r in seed0)
    old = report["old_criterion"]
    cost = report["cost"]
    learned = [r for r in honest if r.get("holdout_accuracy", 1.0) >= LEARNED]
    return {
        "honest_teachers": len(honest),
        "honest_excluded": sum(not r["accepted"] for r in honest),
        "honest_excluded_ids": [r["teacher"] for r in honest if not r["accepted"]],
        "honest_excluded_holdout": {
            r["teacher"]: r["holdout_accuracy"]
            for r in honest
            if not r["accepted"] and "holdout_accuracy" in r
        },
        "learned_teachers": len(learned),
        "learned_excluded": sum(not r["accepted"] for r in learned),
        "failed_teachers": len(honest) - len(learned),
        "by_arch": by_arch,
        "min_label_margin": min(margins) if margins else None,
        "min_label_correlation": min(correlations) if correlations else None,
        "corrupted_caught": {
            kind: f"{sum(not r['accepted'] for r in rows)}/{len(rows)}"
            for kind in sorted({r["kind"] for r in report["corrupted"]})
            for rows in [[r for r in report["corrupted"] if r["kind"] == kind]]
        },
        "old_criterion_excluded": {
            arch: f"{sum(not r['accepted'] for r in old if r['arch'] == arch)}/"
            f"{sum(r['arch'] == arch for r in old)}"
            for arch in sorted({r["arch"] for r in old})
        },
        "old_criterion_seconds_by_arch": {
            arch: float(np.mean([r["seconds"] for r in old if r["arch"] == arch]))
            for arch in sorted({r["arch"] for r in old})
        },
        "screening_seconds_by_arch": seconds,
        "screening_seconds_main_job_seed0": screen_total,
        "screening_share_of_free_training": screen_total / cost["main_job_free_training_s"],
    }


def _learned_lines(s: dict[str, Any]) -> list[str]:
    """Exclusions among teachers that learned their classes; each excluded one's hold-out.

    Reports written before the hold-out accuracy was recorded give no line.
    """
    if "learned_teachers" not in s:
        return []
    held = ", ".join(f"{t} {a:.2f}" for t, a in s["honest_excluded_holdout"].items())
    return [
        f"Among the {s['learned_teachers']} honest teachers that learned their classes "
        f"(hold-out accuracy >= {LEARNED} on their own held-out images), "
        f"**{s['learned_excluded']} excluded**; {s['failed_teachers']} local trainings failed "
        f"(hold-out below {LEARNED}). Hold-out accuracy of each excluded teacher: "
        f"{held or 'none excluded'}.",
        "",
    ]


def _remeasured_lines(report: dict[str, Any]) -> list[str]:
    """When parts were measured in different runs, which run measured which part."""
    when = report.get("measured", {})
    if len(set(when.values())) < 2:
        return []
    parts = ", ".join(f"`{p}` {d}" for p, d in when.items())
    return [
        f"Parts measured in separate runs (`--parts`): {parts}. Figures that combine parts "
        "(screening's share of FREE's training) combine runs, possibly on different loads.",
        "",
    ]


def markdown(report: dict[str, Any]) -> str:
    """The human report of a :func:`run` result."""
    s = report["summary"]
    cfg = report["config"]
    lines = [
        "# Teacher screening: measured",
        "",
        f"`python -m scripts.studies.screening` ({report['seconds']:.0f} s on "
        f"{report['host']['device']}, 1 thread). Default `ScreeningConfig`: pixel-space recovery "
        f"{cfg['steps']} steps x {cfg['images_per_class']} images per class from "
        f"{cfg['probe_images']} meta-val probe images (lr {cfg['recovery_lr']}); accept at "
        f"accuracy >= {cfg['min_accuracy']} and confidence >= {cfg['min_confidence']}, "
        f"|logit| <= {cfg['max_logit']:g}, top-class share <= {cfg['max_top_class_share']}, "
        f"weight norm within {cfg['max_weight_ratio']}x of its spec's median, weight "
        f"similarity < {cfg['max_weight_similarity']} and matched output correlation < "
        f"{cfg['max_duplicate_correlation']} with earlier teachers, mean label "
        f"correlation >= {cfg['min_label_correlation']} and margin >= "
        f"{cfg['min_label_margin']} over >= {cfg['min_label_pairs']} pairs.",
        "",
        *_remeasured_lines(report),
        "## Honest teachers",
        "",
        f"**{s['honest_excluded']} of {s['honest_teachers']} honest teachers excluded** "
        f"{s['honest_excluded_ids'] or ''}.",
        "",
        *_learned_lines(s),
        "| pool | teachers | excluded | suspected |",
        "|---|---:|---:|---:|",
    ]
    for name, pool in report["honest"].items():
        rows = pool["rows"]
        lines.append(
            f"| {name} | {len(rows)} | {sum(not r['accepted'] for r in rows)} | "
            f"{sum(r['suspected'] for r in rows)} |"
        )
    lines += [
        "",
        "Worst honest figures, by architecture (all pools):",
        "",
        "| arch | teachers | min recovery accuracy | min confidence | max top-class share "
        "| max abs logit | max output correlation | max weight similarity |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arch, a in s["by_arch"].items():
        lines.append(
            f"| {arch} | {a['teachers']} | {a['min_recovery_accuracy']:.3f} | "
            f"{a['min_recovery_confidence']:.3f} | {a['max_top_class_share']:.3f} | "
            f"{a['max_abs_logit']:.1f} | {a['max_duplicate_correlation']:.3f} | "
            f"{a['max_weight_similarity']:.3f} |"
        )
    if s["min_label_margin"] is not None:
        lines += [
            "",
            f"Lowest honest label agreement (shared-name pool, every other teacher a peer): "
            f"mean margin {s['min_label_margin']:.3f}, mean correlation "
            f"{s['min_label_correlation']:.3f}.",
        ]
    lines += [
        "",
        "## Corrupted teachers (seed-0 owners, screened alone)",
        "",
        "| corruption | caught |",
        "|---|---:|",
        *(f"| {k} | {v} |" for k, v in s["corrupted_caught"].items()),
        "",
        "## The replaced criterion on the same owners",
        "",
        f"A fresh generator, {OLD_STEPS} steps, accept at accuracy >= {OLD_ACCURACY} and "
        f"confidence >= {OLD_CONFIDENCE} (excluded / owners):",
        "",
        "| arch | excluded | seconds per teacher |",
        "|---|---:|---:|",
        *(
            f"| {arch} | {v} | {s['old_criterion_seconds_by_arch'][arch]:.2f} |"
            for arch, v in s["old_criterion_excluded"].items()
        ),
        "",
        "## Cost",
        "",
        "| arch | screening seconds per teacher |",
        "|---|---:|",
        *(f"| {arch} | {v:.2f} |" for arch, v in s["screening_seconds_by_arch"].items()),
        "",
        f"Screening the main job's 20 owners (seed 0): "
        f"{s['screening_seconds_main_job_seed0']:.1f} s. FREE's own training of the main job "
        f"(the published algorithm's `paper-cpu` preset, {report['cost']['iterations']} "
        "iterations, measured here as "
        f"{report['cost']['warmup_iteration_s']:.2f} s per warm-up and "
        f"{report['cost']['iteration_s']:.2f} s per later iteration): "
        f"{report['cost']['main_job_free_training_s']:.0f} s. Screening adds "
        f"**{100 * s['screening_share_of_free_training']:.1f}% of FREE's training time**, "
        "which is itself a part of the main job (owners' training, meta-test and export come "
        "on top), so its share of the main job is smaller still.",
        "",
        "## Backdoor: the trigger search that was not kept",
        "",
        "A 6x6 patch in each corner optimised towards each class on 8 probe images; the "
        "figure is the largest share of probes, among those not already of the class, that "
        "one patch moves to it.",
        "",
        "| kind | teachers | moved share: min | median | max |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind in ("honest", "backdoor"):
        rates = [r["moved_share"] for r in report["backdoor_search"] if r["kind"] == kind]
        if rates:
            lines.append(
                f"| {kind} | {len(rates)} | {min(rates):.2f} | {float(np.median(rates)):.2f} | "
                f"{max(rates):.2f} |"
            )
    lines += [
        "",
        "Honest glyph classifiers are moved as far as backdoored ones: a threshold that "
        "catches the backdoors excludes most honest owners, so the search is not a check.",
        "",
    ]
    return "\n".join(lines + _mask_lines(report["backdoor_search"]))


def _mask_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The free-form mask search's table (rows of a run before it existed have none)."""
    rows = [r for r in rows if "mask_ratio" in r]
    if not rows:
        return []
    lines = [
        "A free-form trigger (Neural Cleanse: a mask and a pattern over the whole image, "
        "per class, 60 Adam steps on 48 probes, mask size weighted 0.01): the smallest "
        "class's mask size over the median of the others (small: one class is reached "
        "with a small trigger, as a backdoor's target should be).",
        "",
        "| kind | teachers | size ratio: min | median | max | seconds per teacher |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind in ("honest", "backdoor"):
        mine = [r for r in rows if r["kind"] == kind]
        if mine:
            ratios = [r["mask_ratio"] for r in mine]
            lines.append(
                f"| {kind} | {len(mine)} | {min(ratios):.2f} | {float(np.median(ratios)):.2f} | "
                f"{max(ratios):.2f} | {np.mean([r['mask_seconds'] for r in mine]):.1f} |"
            )
    honest = [r["mask_ratio"] for r in rows if r["kind"] == "honest"]
    caught = [r["mask_ratio"] for r in rows if r["kind"] == "backdoor"]
    if honest and caught:
        bar = min(honest)  # the largest threshold that excludes no honest teacher
        share = float(np.mean([c < bar for c in caught]))
        lines += [
            "",
            f"A threshold below every honest teacher's ratio ({bar:.2f}) catches "
            f"{100 * share:.0f}% of the backdoors.",
        ]
    return [*lines, ""]


PARTS = ("honest", "corrupted", "old_criterion", "cost", "backdoor_search")


def run(seeds: Sequence[int], out: Path, parts: Sequence[str] = PARTS) -> dict[str, Any]:
    """Measure ``parts`` and write ``screening.json`` and ``screening.md`` under ``out``.

    Parts not measured are kept from the ``screening.json`` already under ``out`` (measured
    with the same configuration and seeds, else refused); ``seconds`` adds this call's
    time to theirs.

    Raises:
        ValueError: an unknown part, or parts to keep without a matching earlier report.
    """
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown parts {unknown}: expected some of {', '.join(PARTS)}")
    started = time.perf_counter()
    torch.set_num_threads(1)
    config = ScreeningConfig()
    report: dict[str, Any] = {"config": vars(config).copy(), "seeds": list(seeds)}
    earlier_seconds = 0.0
    when: dict[str, str] = {}
    if set(parts) != set(PARTS):
        earlier = _earlier(out / "screening.json", report)
        report |= {p: earlier[p] for p in PARTS if p not in parts}
        earlier_seconds = float(earlier["seconds"])
        when = {p: earlier.get("measured", {}).get(p, "first run") for p in PARTS}
    val = load_glyphs("val")
    probes = probe_images(val, config.probe_images, seed=0)
    measures: dict[str, Callable[[], Any]] = {
        "honest": lambda: measure_honest(seeds, probes, config),
        "corrupted": lambda: measure_corrupted(probes, config),
        "old_criterion": lambda: measure_old_criterion(seeds),
        "cost": lambda: measure_free_iterations(val),
        "backdoor_search": lambda: measure_backdoor_search(probes),
    }
    for part in PARTS:
        if part in parts:
            report[part] = measures[part]()
            when[part] = time.strftime("%Y-%m-%d")
    report["measured"] = when
    report["summary"] = _summary(report)
    report["host"] = host_record(torch.device("cpu"))
    report["seconds"] = earlier_seconds + time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    (out / "screening.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    (out / "screening.md").write_text(markdown(report))
    return report


def _earlier(path: Path, report: dict[str, Any]) -> dict[str, Any]:
    """The report under ``path`` whose parts are kept, if it matches ``report``'s settings."""
    if not path.is_file():
        raise ValueError(f"{path} does not exist: measure every part first (no --parts)")
    earlier: dict[str, Any] = json.loads(path.read_text())
    for key in ("config", "seeds"):
        if earlier.get(key) != report[key]:
            raise ValueError(f"{path} was measured with another {key}: measure every part")
    return earlier


def main(argv: list[str] | None = None) -> int:
    """Run the parts asked for (every part by default); print the headline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts to measure")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parts = [p for p in args.parts.split(",") if p]
    try:
        report = run([int(s) for s in args.seeds.split(",")], args.out, parts)
    except ValueError as err:
        parser.error(str(err))
    s = report["summary"]
    print(
        f"honest excluded: {s['honest_excluded']}/{s['honest_teachers']}; corrupted caught: "
        f"{s['corrupted_caught']}; old criterion excluded {s['old_criterion_excluded']}; "
        f"screening = {100 * s['screening_share_of_free_training']:.1f}% of FREE's training"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
