"""Copies with reordered hidden units against honest owners: where the unit limit sits.

A free-rider can submit another owner's model with its hidden units reordered: the weights
then look unrelated to the original's (the weight sketch misses it) while its outputs
match the original's. Screening judges such an output match on the hidden units
(:mod:`free_common.free.trust.representations`): the mean correlation of units matched one
to one, from which ``ScreeningConfig.max_unit_correlation`` excludes. This study measures
that figure on the main job's honest owners (``scripts.bench.main_job_owners``, glyphs and
icons, run seeds 0-2: every pair of owners of one spec) and on copies of every owner with
Gaussian noise of 0.05x, 0.1x and 0.3x each weight tensor's std (the poison bench's
free-rider attack, ``scripts.bench.poison_attacks.free_rider``, across its range). The
copies are not reordered: the matching runs over every pair of
units, so their order does not change the figure (the unit tests show it on a reordered
Conv4). For each copy it also records whether its outputs match the original's closely
enough (``max_duplicate_correlation``) for the unit check to run at all.

Usage: ``python -m scripts.studies.reordered_copies [--seeds 0,1,2] [--out scripts/results]``
(about 10 minutes on 2 cores, owners cached after their first training).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from free_common.config import ScreeningConfig
from free_common.data.registry import load_split
from free_common.free.teachers import Teacher, teacher_from_state_dict
from free_common.free.trust.checks import matched_correlation, standardised
from free_common.free.trust.fingerprint import weight_sketch
from free_common.free.trust.probes import probe_images, teacher_logits
from free_common.free.trust.representations import UnitFeatures, unit_features, unit_match
from free_common.runtime import host_record
from scripts.bench.main_job_owners import Owner, main_job_owners
from scripts.bench.poison_attacks import Model, free_rider

__all__ = ["NOISE", "measure", "markdown"]

logger = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
DATASETS = ("glyphs", "icons")
NOISE = (0.05, 0.1, 0.3)
"""Copy noise, in units of each weight tensor's std."""


class _Measured:
    """One teacher's probe outputs (standardised), weight sketch and unit features."""

    def __init__(self, teacher: Teacher, probes: torch.Tensor) -> None:
        self.teacher = teacher
        self.outputs = standardised(teacher_logits(teacher, probes))
        self.sketch = weight_sketch(teacher)
        self.units: UnitFeatures = unit_features(teacher, probes)

    def against(self, other: _Measured) -> dict[str, float]:
        """Matched output correlation, weight similarity and unit match with ``other``."""
        probes = self.outputs.shape[0]
        return {
            "outputs": matched_correlation(self.outputs.T @ other.outputs / probes),
            "weights": float(self.sketch @ other.sketch),
            "units": unit_match(self.units, other.units),
        }


def _free_rider(owner: Owner, noise: float, rng: np.random.Generator) -> Teacher:
    """The poison bench's free-rider (:func:`~scripts.bench.poison_attacks.free_rider`)."""
    source = Model(owner.owner_id, owner.spec, owner.state_dict, ())
    copy = free_rider(source, rng, model_id=f"{owner.owner_id}-copy", noise=noise)
    return teacher_from_state_dict(copy.model_id, copy.spec, copy.state_dict)


def measure(dataset: str, seed: int, probes: torch.Tensor) -> dict[str, Any]:
    """Honest same-spec pairs and noisy copies of the main job's owners at one seed."""
    owners = main_job_owners(seed, dataset=dataset)
    measured = [_Measured(o.teacher(), probes) for o in owners]
    honest = [
        {"arch": a.teacher.spec.arch, "pair": [a.teacher.teacher_id, b.teacher.teacher_id]}
        | a.against(b)
        for a, b in itertools.combinations(measured, 2)
        if a.teacher.spec == b.teacher.spec
    ]
    rng = np.random.default_rng(seed)
    copies = [
        {"arch": m.teacher.spec.arch, "teacher": m.teacher.teacher_id, "noise": noise}
        | _Measured(_free_rider(o, noise, rng), probes).against(m)
        for o, m in zip(owners, measured, strict=True)
        for noise in NOISE
    ]
    logger.info("%s seed %d: %d honest pairs, %d copies", dataset, seed, len(honest), len(copies))
    return {"honest": honest, "copies": copies}


def _summary(rows: dict[str, Any], config: ScreeningConfig) -> dict[str, Any]:
    honest = [r for d in rows.values() for s in d.values() for r in s["honest"]]
    copies = [r for d in rows.values() for s in d.values() for r in s["copies"]]
    out: dict[str, Any] = {}
    for arch in sorted({r["arch"] for r in honest + copies}):
        h = [r for r in honest if r["arch"] == arch]
        entry: dict[str, Any] = {
            "honest_pairs": len(h),
            "honest_max_units": max(r["units"] for r in h),
            "honest_max_outputs": max(r["outputs"] for r in h),
            "honest_over_limit": sum(r["units"] >= config.max_unit_correlation for r in h),
        }
        for noise in NOISE:
            c = [r for r in copies if r["arch"] == arch and r["noise"] == noise]
            gated = [r["outputs"] >= config.max_duplicate_correlation for r in c]
            caught = [
                g and r["units"] >= config.max_unit_correlation
                for g, r in zip(gated, c, strict=True)
            ]
            entry[f"noise_{noise:g}"] = {
                "copies": len(c),
                "min_units": min(r["units"] for r in c),
                "outputs_gate_passed": int(sum(gated)),
                "caught": int(sum(caught)),
            }
        out[arch] = entry
    return out


def markdown(report: dict[str, Any]) -> str:
    """The report's tables."""
    cfg = report["config"]
    lines = [
        f"Reordered-copy check ({', '.join(report['datasets'])}, main-job owners of run "
        f"seeds {', '.join(map(str, report['seeds']))}; {report['probes']} probe images). "
        f"A copy is caught when its matched output correlation reaches "
        f"{cfg['max_duplicate_correlation']} and its matched unit correlation "
        f"{cfg['max_unit_correlation']}; noise in units of each weight tensor's std.",
        "",
        "| arch | honest pairs | honest max unit corr. | honest at or over the limit "
        + "".join(f"| copies {n:g}x: min unit corr., caught " for n in NOISE)
        + "|",
        "|---|---|---|---" + "|---" * len(NOISE) + "|",
    ]
    for arch, e in report["summary"].items():
        cells = [
            f"{e[f'noise_{n:g}']['min_units']:.3f}, "
            f"{e[f'noise_{n:g}']['caught']} of {e[f'noise_{n:g}']['copies']}"
            for n in NOISE
        ]
        lines.append(
            f"| {arch} | {e['honest_pairs']} | {e['honest_max_units']:.3f} | "
            f"{e['honest_over_limit']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def run(seeds: list[int], out: Path) -> dict[str, Any]:
    """Measure every dataset and seed; write ``reordered_copies.{json,md}`` under ``out``."""
    started = time.perf_counter()
    torch.set_num_threads(1)
    config = ScreeningConfig()
    rows: dict[str, Any] = {}
    for dataset in DATASETS:
        probes = probe_images(load_split(dataset, "val"), config.probe_images, seed=0)
        rows[dataset] = {str(s): measure(dataset, s, probes) for s in seeds}
    report = {
        "datasets": list(DATASETS),
        "seeds": seeds,
        "probes": config.probe_images,
        "config": {
            "max_duplicate_correlation": config.max_duplicate_correlation,
            "max_unit_correlation": config.max_unit_correlation,
        },
        "summary": _summary(rows, config),
        "rows": rows,
        "host": host_record(torch.device("cpu")),
        "seconds": time.perf_counter() - started,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "reordered_copies.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    (out / "reordered_copies.md").write_text(markdown(report))
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the study and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    report = run([int(s) for s in args.seeds.split(",")], args.out)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
