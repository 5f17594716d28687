"""Can a data-free trigger scan tell backdoored teachers from honest ones?

Screening catches none of the poison bench's backdoored teachers (``scripts/results/poison.md``):
on clean images a backdoored model behaves like an honest one. This study measures the
candidate check of :mod:`free_common.free.trust.triggers` (Neural Cleanse's search for the
smallest mask that sends most images to a class, on the server's probe images, judged on
probes it was not fitted on) before it may become a screening check:

- backdoored teachers: the poison bench's attack (``scripts.bench.poison_attacks.backdoored``,
  a 4x4 checkerboard on 30% extra images labelled with a target class, trained from
  scratch), made from the first ``--backdoors`` members of the quick poison pool (Conv4,
  ResNet-10, ResNet-18 in turn) and from the first ``--owner-backdoors`` glyph owners of
  the main job's run seed 0 (its own architectures and widths);
- honest teachers: the quick pool's other members, and the main job's honest owners
  (``scripts.bench.main_job_owners``) of the given run seeds and datasets, each scanned
  on probes of its own dataset's meta-val.

For each teacher: every class's mask share, concentration and held-out flip rate, and the
score, the smallest patch (``TriggerScan.patch``: mask share over concentration) among the
classes flipped at ``--min-flip`` or more (inf if none).
For the backdoored ones also the implanted trigger's own flip rate and the found mask of
the target class. The summary gives the score's ranking quality (AUC: the chance that a
backdoored teacher scores below an honest one) and the detection rate at the largest
threshold that excludes at most 2% of the honest teachers.

Usage: ``python -m scripts.studies.trigger_scan [--steps N] [--out scripts/results]`` (the
screening's own scan settings by default; writes ``trigger_scan.{json,md}``; about 10
minutes on 2 cores with the pools and owners cached).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from free_common.config import ScreeningConfig
from free_common.data.registry import load_split
from free_common.free.augment import to_model_input
from free_common.free.teachers import Teacher, teacher_from_state_dict
from free_common.free.trust.fingerprint import screening_scan
from free_common.free.trust.probes import probe_images
from free_common.runtime import host_record
from scripts.bench import poison_attacks as attacks
from scripts.bench.main_job_owners import main_job_owners
from scripts.bench.poison import PRESETS, _members
from scripts.bench.teacher_pool import DEFAULT_CACHE

__all__ = ["auc", "detection_at", "main", "run"]

logger = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
FALSE_POSITIVE_LIMIT = 0.02


def auc(suspicious: list[float], honest: list[float]) -> float:
    """The chance that a suspicious score is below an honest one (ties count half)."""
    if not suspicious or not honest:
        return float("nan")
    s, h = np.asarray(suspicious)[:, None], np.asarray(honest)[None, :]
    return float(((s < h).sum() + 0.5 * (s == h).sum()) / (s.size * h.size))


def detection_at(
    suspicious: list[float], honest: list[float], limit: float = FALSE_POSITIVE_LIMIT
) -> tuple[float, float, float]:
    """(threshold, detection rate, false-positive rate) at the largest safe threshold.

    The largest threshold that flags (score < threshold) at most ``limit`` of the honest
    scores.
    """
    allowed = int(np.floor(limit * len(honest)))
    ranked = sorted(honest)
    threshold = ranked[allowed] if allowed < len(ranked) else float("inf")
    detected = float(np.mean([s < threshold for s in suspicious])) if suspicious else 0.0
    flagged = float(np.mean([h < threshold for h in honest])) if honest else 0.0
    return threshold, detected, flagged


def _score(row: dict[str, Any]) -> float:
    return math.inf if row["score"] is None else float(row["score"])


def _teacher(model: attacks.Model) -> Teacher:
    return teacher_from_state_dict(model.model_id, model.spec, model.state_dict, None)


def _trigger_flip(model: attacks.Model, probes: torch.Tensor) -> float:
    """Share of probes not already of the target class that the real trigger flips to it."""
    teacher = _teacher(model)
    stamped = attacks.stamp_trigger((probes * 255).round().to(torch.uint8).numpy())
    spec, target = model.spec, int(model.detail["target"])
    with torch.no_grad():
        clean = teacher.model(to_model_input(probes, spec.image_size, spec.in_channels))
        hit = teacher.model(
            to_model_input(
                torch.from_numpy(stamped).float() / 255, spec.image_size, spec.in_channels
            )
        )
    others = clean.argmax(1) != target
    return float(((hit.argmax(1) == target) & others).sum()) / max(int(others.sum()), 1)


def _screening(args: argparse.Namespace) -> ScreeningConfig:
    """The screening's settings with the study's scan arguments in their place."""
    return replace(
        ScreeningConfig(),
        trigger_steps=args.steps,
        trigger_batch=args.batch,
        trigger_lr=args.lr,
        trigger_mask_weight=args.mask_weight,
        min_trigger_flip=args.min_flip,
        min_trigger_patch=args.limit,
        trigger_refine_steps=args.refine_steps,
        trigger_refine_below=args.refine_below,
        trigger_confirmations=args.confirmations,
    )


def _row(
    teacher: Teacher, kind: str, probes: torch.Tensor, args: argparse.Namespace
) -> dict[str, Any]:
    scan = screening_scan(teacher, probes, _screening(args))
    row = {"teacher": teacher.teacher_id, "arch": teacher.spec.arch, "kind": kind}
    score = scan.smallest(args.min_flip)
    row |= asdict(scan) | {
        "score": score if math.isfinite(score) else None,  # None: no class flipped
        "shortcut": scan.shortcut(args.min_flip),
    }
    logger.info(
        "%s %s %s score %.4f (%.1f s)", kind, row["arch"], row["teacher"], score, scan.seconds
    )
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the backdoored teachers, scan every teacher, summarise."""
    torch.manual_seed(0)
    preset = PRESETS["quick"]
    members, train, _ = _members(preset, DEFAULT_CACHE)
    probes = probe_images(load_split("glyphs", "val"), args.probes, seed=0)
    rows = []
    for i, member in enumerate(members[: args.backdoors]):
        model = attacks.backdoored(
            member,
            train,
            np.random.default_rng([0, i, 23]),
            model_id=f"{member.model_id}-bd",
            epochs=preset.attack_epochs,
        )
        row = _row(_teacher(model), "backdoor", probes, args)
        row |= {"target": int(model.detail["target"]), "trigger_flip": _trigger_flip(model, probes)}
        rows.append(row)
    for member in members[args.backdoors :]:
        rows.append(_row(_teacher(member), "honest (poison pool)", probes, args))
    glyphs = load_split("glyphs", "train")
    for k, owner in enumerate(main_job_owners(0)[: args.owner_backdoors]):
        victim = attacks.Model(
            owner.owner_id,
            owner.spec,
            owner.state_dict,
            tuple(glyphs.class_names.index(n) for n in owner.class_names),
        )
        model = attacks.backdoored(
            victim, glyphs, np.random.default_rng([1, k, 23]), model_id=f"s0-{owner.owner_id}-bd"
        )
        row = _row(_teacher(model), "backdoor", probes, args)
        row |= {"target": int(model.detail["target"]), "trigger_flip": _trigger_flip(model, probes)}
        rows.append(row)
    for dataset in args.owner_datasets:
        own_probes = probe_images(load_split(dataset, "val"), args.probes, seed=0)
        for seed in args.owner_seeds:
            for owner in main_job_owners(seed, dataset=dataset):
                rows.append(
                    _row(owner.teacher(), f"honest (main job, {dataset})", own_probes, args)
                )
    suspicious = [_score(r) for r in rows if r["kind"] == "backdoor"]
    honest = [_score(r) for r in rows if r["kind"] != "backdoor"]
    threshold, detected, flagged = detection_at(suspicious, honest)
    limit = args.limit
    flagged_by_kind = {
        kind: [r["teacher"] for r in rows if r["kind"] == kind and _score(r) < limit]
        for kind in dict.fromkeys(r["kind"] for r in rows)
    }
    return {
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "rows": rows,
        "summary": {
            "auc": auc(suspicious, honest),
            "threshold": threshold,
            "detection": detected,
            "false_positives": flagged,
            "backdoors": len(suspicious),
            "honest": len(honest),
            "limit": limit,
            "flagged_at_limit": flagged_by_kind,
        },
        "host": host_record(torch.device("cpu")),
    }


def _refinement(cfg: dict[str, Any]) -> str:
    """How the scan refined shortcut-like classes ("" for a record made before refinement)."""
    if not cfg.get("refine_steps"):
        return ""
    again = cfg.get("confirmations", 0)
    return (
        f"; each class reached through a patch below {cfg['refine_below']:.0%} fitted "
        f"{cfg['refine_steps']} more steps on its own and judged again"
        + (
            f"; a scan below the limit repeated with other seeds, up to {again} times, "
            "and the teacher scored by the least suspicious scan"
            if again
            else ""
        )
    )


def summary_markdown(report: dict[str, Any]) -> str:
    """The study's figures per group of teachers, for the server's page."""
    s, cfg = report["summary"], report["settings"]
    lines = [
        f"Trigger scan (`python -m scripts.studies.trigger_scan`: {cfg['steps']} Adam steps, "
        f"{cfg['batch']} probes per class and step, lr {cfg['lr']}, mask weight "
        f"{cfg['mask_weight']}; a class counts when its mask flips {cfg['min_flip']:.0%} of the "
        f"held-out probes{_refinement(cfg)}). Patch: the mask's share of the pixels over the "
        f"share of its mass in its densest window; the screening excludes below "
        f"{s['limit']:.2%}. AUC {s['auc']:.3f} over {s['backdoors']} backdoored and "
        f"{s['honest']} honest teachers.",
        "",
        "| teachers | count | excluded at the limit | smallest patch | largest patch | "
        "seconds per teacher |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, ids in s["flagged_at_limit"].items():
        mine = [r for r in report["rows"] if r["kind"] == kind]
        scores = sorted(_score(r) for r in mine)
        finite = [x for x in scores if math.isfinite(x)]
        largest = f"{finite[-1]:.2%}" if finite else "none"
        none = len(scores) - len(finite)
        if none:
            largest += f" ({none} reach no class)"
        seconds = sum(r["seconds"] for r in mine) / len(mine)
        lines.append(
            f"| {kind} | {len(mine)} | {len(ids)} | {scores[0]:.2%} | {largest} | {seconds:.1f} |"
        )
    owners = [r for r in report["rows"] if r["kind"].startswith("honest (main job")]
    per_arch = {
        arch: sum(r["seconds"] for r in owners if r["arch"] == arch)
        / max(1, sum(r["arch"] == arch for r in owners))
        for arch in sorted({r["arch"] for r in owners})
    }
    lines += [
        "",
        "Scan seconds per main-job owner (2 threads): "
        + ", ".join(f"{arch} {sec:.1f}" for arch, sec in per_arch.items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def markdown(report: dict[str, Any]) -> str:
    """The study's page."""
    s, cfg = report["summary"], report["settings"]
    lines = [
        "# Trigger scan: backdoored against honest teachers "
        "(`python -m scripts.studies.trigger_scan`)",
        "",
        f"Scan: {cfg['steps']} Adam steps, {cfg['batch']} fitting probes per class and step, "
        f"lr {cfg['lr']}, mask weight {cfg['mask_weight']}, {cfg['probes']} glyph meta-val probes "
        f"(half fit, half judge); score: the smallest patch (mask share of the input's pixels "
        f"over the share of its mass in its densest window) among classes flipping at least "
        f"{cfg['min_flip']:.0%} of the held-out probes{_refinement(cfg)}.",
        "",
        f"- {s['backdoors']} backdoored, {s['honest']} honest teachers; AUC {s['auc']:.3f} "
        "(1: every backdoored teacher scores below every honest one; 0.5: chance).",
        f"- At the largest threshold flagging at most {FALSE_POSITIVE_LIMIT:.0%} of honest "
        "teachers "
        f"({s['threshold']:.4f}): {s['detection']:.0%} of backdoored teachers detected, "
        f"{s['false_positives']:.1%} of honest ones flagged.",
        f"- At the screening's limit ({s['limit']:.2%}), flagged: "
        + "; ".join(
            f"{kind} {len(ids)} of {sum(r['kind'] == kind for r in report['rows'])}"
            + (f" ({', '.join(ids)})" if ids and kind != "backdoor" else "")
            for kind, ids in s["flagged_at_limit"].items()
        )
        + ".",
        "",
        "| kind | arch | teacher | score | class | its mask | its concentration | "
        "target | trigger's flip | seconds |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(report["rows"], key=lambda r: (r["kind"], _score(r))):
        k = r["shortcut"]
        mask = "" if k is None else f"{r['mask_shares'][k]:.4f}"
        conc = "" if k is None else f"{r['concentrations'][k]:.2f}"
        flip = f"{r['trigger_flip']:.2f}" if "trigger_flip" in r else ""
        lines.append(
            f"| {r['kind']} | {r['arch']} | {r['teacher']} | {_score(r):.4f} | "
            f"{'' if k is None else k} | {mask} | {conc} | {r.get('target', '')} | {flip} "
            f"| {r['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    screening = ScreeningConfig()  # the screening's own settings by default
    parser.add_argument("--steps", type=int, default=screening.trigger_steps)
    parser.add_argument("--batch", type=int, default=screening.trigger_batch)
    parser.add_argument("--lr", type=float, default=screening.trigger_lr)
    parser.add_argument("--mask-weight", type=float, default=screening.trigger_mask_weight)
    parser.add_argument("--min-flip", type=float, default=screening.min_trigger_flip)
    parser.add_argument("--refine-steps", type=int, default=screening.trigger_refine_steps)
    parser.add_argument("--refine-below", type=float, default=screening.trigger_refine_below)
    parser.add_argument("--confirmations", type=int, default=screening.trigger_confirmations)
    parser.add_argument("--limit", type=float, default=screening.min_trigger_patch)
    parser.add_argument("--probes", type=int, default=256)
    parser.add_argument("--backdoors", type=int, default=12)
    parser.add_argument("--owner-backdoors", type=int, default=20)
    parser.add_argument(
        "--owner-seeds", type=lambda s: [int(x) for x in s.split(",") if x], default=[0, 1, 2]
    )
    parser.add_argument(
        "--owner-datasets",
        type=lambda s: [x for x in s.split(",") if x],
        default=["glyphs", "icons"],
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--stem", default="trigger_scan")
    parser.add_argument(
        "--rebuild", action="store_true", help="write the pages again from <out>/<stem>.json"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.rebuild:
        report = json.loads((args.out / f"{args.stem}.json").read_text())
    else:
        started = time.perf_counter()
        report = run(args)
        report["seconds"] = time.perf_counter() - started
        args.out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(report, indent=1, default=float) + "\n"
        (args.out / f"{args.stem}.json").write_text(text)
    (args.out / f"{args.stem}.md").write_text(markdown(report))
    (args.out / f"{args.stem}_summary.md").write_text(summary_markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
