"""Is it the images or the update? FREE's meta-learning fed the teachers' real images.

A diagnostic for issue 15, not a data-free method. The shipped default (``xkd-cpu``)
trails an untrained network and the best single owner on the glyph pools. Two readings
are possible: the recovered images are too far from real ones for features learned on
them to transfer (the images), or imitating teachers' 5-way outputs does not teach
transferable features even on real images (the update). This study keeps everything of
the default (pool, seed, cross-teacher distillation, memory bank, meta-val selection,
iterations) and swaps only the recovery: each sampled teacher "recovers" ``m`` of its own
real training images per class, drawn at random from the images it trained on
(:func:`scripts.bench.teacher_pool.member_images`), in place of the meta-generator's.

The learner is then meta-tested exactly as the does-FREE-win bench measures every method
(same tasks, ``tuned`` and ``proto`` protocols, 5-way 1- and 5-shot), and the report sets
it beside that bench's committed units for FREE, Random and the best single teacher.

- Real images well above FREE and near or above the best owner: the update works and the
  images hold FREE back, so effort belongs in recovery.
- Real images no better than FREE: the update itself cannot turn teachers into
  transferable features, and better recovery alone will not help.

Resumable: one unit per training seed (``scripts/results/real_images_units/seed<k>.json``);
the trained learner is cached (``~/.cache/freefed/real_images``). The report
(``real_images.{json,md}``) is rebuilt from every finished unit.

Usage::

    python -m scripts.studies.real_images --seeds 0 --threads 1
    python -m scripts.studies.real_images --report
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from free_common.config import InversionConfig
from free_common.free.augment import to_model_input
from free_common.free.generation import Recovered, recovery_quality, target_labels
from free_common.free.inversion import MetaGeneratorInverter
from free_common.free.meta_learner import learner_spec
from free_common.free.teachers import InMemoryTeachers, Teacher
from free_common.models import Classifier, build_model
from free_common.protocols import meta_test
from free_common.runtime import host_record, pick_device
from scripts.bench import free_wins
from scripts.bench.teacher_pool import (
    PoolSettings,
    build_pool,
    load_split,
    member_images,
    teachers_of,
)
from server.baselines import free_trainer

__all__ = ["RealImageInverter", "main", "markdown", "run_unit"]

logger = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
CACHE_DIR = Path("~/.cache/freefed").expanduser()
SETTINGS = ("glyphs-5w1s", "glyphs-5w5s")
PROTOCOLS = ("tuned", "proto")
BESIDE = ("free", "random", "best_owner")
"""The does-FREE-win bench's methods quoted beside the real-image learner."""


class RealImageInverter(MetaGeneratorInverter):
    """Drop-in inverter that returns each teacher's own real training images.

    ``m = config.images_per_class`` images per class, drawn with the trainer's generator
    from the images the teacher trained on, at the generator's resolution and channels.
    The inherited meta-generator is never used (it only keeps the checkpoint format).

    Args:
        config: the inversion settings (``images_per_class``, ``image_size``,
            ``channels``).
        device: where the images go.
        images: teacher id -> (its training images (M, C, H, W) in [0, 1], their labels
            (M,) 0..classes-1).
    """

    def __init__(
        self,
        config: InversionConfig,
        device: torch.device,
        images: dict[str, tuple[Tensor, Tensor]],
    ) -> None:
        super().__init__(config, device)
        self.images = images

    def invert(
        self,
        teachers: Sequence[Teacher],
        rng: torch.Generator,
        *,
        learner: nn.Module | None = None,
        adv_weight: float = 0.0,
    ) -> list[Recovered]:
        """One draw of real images per teacher, in order."""
        return [self._draw(t, rng) for t in teachers]

    def _draw(self, teacher: Teacher, rng: torch.Generator) -> Recovered:
        images, labels = self.images[teacher.teacher_id]
        per_class = self.config.images_per_class
        targets = target_labels(teacher.num_classes, per_class, self.device)
        rows = []
        for c in range(teacher.num_classes):
            own = torch.nonzero(labels == c).flatten()
            picks = torch.randint(len(own), (per_class,), generator=rng)
            rows.append(own[picks])
        chosen = images[torch.cat(rows)].to(self.device)
        chosen = to_model_input(chosen, self.config.image_size, self.config.channels)
        accuracy, confidence = recovery_quality(teacher, chosen, targets)
        return Recovered(
            teacher.teacher_id, teacher.class_keys, chosen, targets, accuracy, confidence, 0.0, 0
        )


def _pool(preset: free_wins.WinsPreset, cache_dir: Path) -> tuple[InMemoryTeachers, dict[str, Any]]:
    """The bench's ``single`` pool and each teacher's real training images."""
    spec = learner_spec(free_wins.free_config(preset, "free", 0).meta_learner)
    settings = PoolSettings(
        archs=free_wins.POOLS["single"],
        teachers=preset.teachers,
        epochs=preset.pool_epochs,
        conv4_width=spec.width,
        **({"resnet_width": 2} if preset.dataset == "synthetic" else {}),
    )
    data = load_split(preset.dataset, "train")
    members = build_pool(data, settings, cache_dir=cache_dir / "pools", progress=True)
    images = {
        m.teacher_id: member_images(data, settings, i, m.classes, "train")
        for i, m in enumerate(members)
    }
    return InMemoryTeachers(teachers_of(members)), images


def _learner(
    preset_name: str, seed: int, cache_dir: Path, val: Any
) -> tuple[Classifier, dict[str, Any]]:
    """The default's meta-learning on real images at ``seed`` (cached on disk)."""
    preset = free_wins.PRESETS[preset_name]
    config = free_wins.free_config(preset, "free", seed)
    key = free_wins.method_key(preset, "free", seed)
    work = cache_dir / "real_images" / preset_name / f"seed{seed}-{key}"
    final = work / "model.pt"
    if final.is_file():
        saved = torch.load(final, weights_only=False)
        model = build_model(saved["spec"], batch_stats=True)
        model.load_state_dict(saved["state"])
        return model.eval(), saved["info"]
    teachers, images = _pool(preset, cache_dir)
    t0 = time.perf_counter()
    trainer = free_trainer(config, "free", teachers, val_data=val, work_dir=work)
    trainer.inverter = RealImageInverter(config.inversion, trainer.device, images)
    result = trainer.train(progress=True)
    info = {
        "preset": free_wins.TRAINED["free"],
        "recovery": "real training images",
        "train_seconds": round(time.perf_counter() - t0, 1),
        "best_iteration": result.best_iteration,
        "best_val": result.best_val,
        "val_history": [
            [h["iteration"], round(float(h["val_accuracy"]), 4)]
            for h in result.history
            if h.get("kind") == "val"
        ],
    }
    torch.save({"spec": result.spec, "state": result.model.state_dict(), "info": info}, final)
    return result.model, info


def run_unit(
    preset_name: str, seed: int, *, units: Path, cache_dir: Path = CACHE_DIR
) -> dict[str, Any]:
    """Train (or load) the real-image learner at ``seed`` and meta-test it (skipped when done)."""
    path = units / f"seed{seed}.json"
    if path.is_file():
        logger.info("unit %s: done before", path.name)
        return dict(json.loads(path.read_text()))
    preset = free_wins.PRESETS[preset_name]
    val = load_split(preset.dataset, "val")
    test = load_split(preset.dataset, "test")
    model, info = _learner(preset_name, seed, cache_dir, val)
    protocols = replace(preset.protocols, protocols=PROTOCOLS)
    results: dict[str, Any] = {}
    for setting in SETTINGS:
        _, task = free_wins.SETTINGS[setting]
        measured = meta_test(model, val, test, task, protocols, device=pick_device())
        results[setting] = {k: v.to_dict() for k, v in measured.items()}
    unit = {
        "seed": seed,
        "preset": preset_name,
        "model": info,
        "results": results,
        "settings": {**asdict(protocols), "protocols": list(PROTOCOLS)},
        "host": host_record(pick_device()),
    }
    units.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(unit, indent=1))
    return unit


def _beside(wins_units: Path) -> dict[str, dict[str, dict[str, list[float]]]]:
    """The bench's per-seed means: method -> setting -> protocol -> [mean (%) per seed]."""
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for method in BESIDE:
        for path in sorted((wins_units / "single").glob(f"{method}-s*/*.json")):
            unit = json.loads(path.read_text())
            if unit["setting"] not in SETTINGS:
                continue
            for protocol in PROTOCOLS:
                if protocol in unit["protocols"]:
                    cell = out.setdefault(method, {}).setdefault(unit["setting"], {})
                    cell.setdefault(protocol, []).append(100 * unit["protocols"][protocol]["mean"])
    return out


def report(units: Path, wins_units: Path) -> dict[str, Any]:
    """Every finished unit, beside the does-FREE-win bench's methods."""
    found = [json.loads(p.read_text()) for p in sorted(units.glob("seed*.json"))]
    real: dict[str, dict[str, list[float]]] = {}
    for unit in found:
        for setting, by_protocol in unit["results"].items():
            for protocol, r in by_protocol.items():
                real.setdefault(setting, {}).setdefault(protocol, []).append(100 * r["mean"])
    return {
        "seeds": [u["seed"] for u in found],
        "real_images": real,
        "beside": _beside(wins_units),
        "models": {str(u["seed"]): u["model"] for u in found},
    }


_NAMES = {
    "real_images": "default's meta-learning on real images (not data-free)",
    "free": "FREE (xkd-cpu, recovered images)",
    "random": "Random",
    "best_owner": "Best single teacher",
}


def markdown(rep: dict[str, Any]) -> str:
    """Mean over seeds (worst seed), n seeds, per setting and protocol."""
    lines = [
        "Meta-test accuracy (%, 600 tasks), mean over training seeds (worst seed), n seeds; "
        "the single pool (100 Conv4 glyph teachers); `python -m scripts.studies.real_images`.",
        "",
        "| method | " + " | ".join(f"{s} {p}" for s in SETTINGS for p in PROTOCOLS) + " |",
        "|---" * (1 + len(SETTINGS) * len(PROTOCOLS)) + "|",
    ]
    rows = {"real_images": rep["real_images"], **rep["beside"]}
    for method, by_setting in rows.items():
        cells = []
        for s in SETTINGS:
            for p in PROTOCOLS:
                values = by_setting.get(s, {}).get(p, [])
                cells.append(
                    f"{np.mean(values):.2f} ({min(values):.2f}) n={len(values)}" if values else ""
                )
        lines.append(f"| {_NAMES[method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def headline(rep: dict[str, Any]) -> str:
    """One line for the README: 5-way 1-shot means, tuned / prototypes, per method."""
    rows = {"real images": rep["real_images"], **rep["beside"]}
    names = {"free": "FREE", "random": "Random", "best_owner": "best single teacher"}
    cells = []
    for method, by_setting in rows.items():
        one = by_setting.get("glyphs-5w1s", {})
        if all(one.get(p) for p in PROTOCOLS):
            means = " / ".join(f"{np.mean(one[p]):.1f}" for p in PROTOCOLS)
            cells.append(f"{names.get(method, method)} {means}")
    seeds = len(rep["seeds"])
    return f"5-way 1-shot, tuned / prototypes, {seeds} seed(s): " + ", ".join(cells)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the missing units, then rebuild the report."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(free_wins.PRESETS), default="full")
    p.add_argument("--seeds", default="0")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    p.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    p.add_argument("--report", action="store_true", help="only rebuild the report")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    stem = "real_images" if args.preset == "full" else f"real_images_{args.preset}"
    units = args.out / f"{stem}_units"
    if not args.report:
        for seed in (int(s) for s in args.seeds.split(",")):
            run_unit(args.preset, seed, units=units, cache_dir=args.cache_dir)
    rep = report(units, args.out / "free_wins_units" / args.preset)
    (args.out / f"{stem}.json").write_text(json.dumps(rep, indent=1))
    (args.out / f"{stem}.md").write_text(markdown(rep))
    (args.out / f"{stem}_headline.md").write_text(headline(rep) + "\n")
    print(markdown(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
