"""The honest owners of the main job, trained exactly as its simulated data owners train.

Owner ``i`` of run seed ``s`` is partition ``i`` of ``owners`` (default 20, the main job's
count) under the main job's run configuration (``pyproject.toml``: architecture mix
``conv4:2,resnet10:1,resnet18:1``, Conv4 width 32, ResNet width 16, 5 classes per owner,
30 local epochs), on the glyphs by default or on another ``data.train`` such as the icons:
:func:`client.owner.prepare_owner` then :func:`client.owner.train_and_submit`, unsigned.
The weights are cached on disk per seed and dataset (``~/.cache/freefed/owners`` or
``$FREEFED_OWNER_CACHE``) so that every measurement reads the same owners.

Usage: ``python -m scripts.bench.main_job_owners --seeds 0,1,2 [--dataset icons]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from client.owner import TrainSettings, prepare_owner, train_and_submit
from free_common.card import decode_card, spec_from_card
from free_common.data.registry import load_split
from free_common.free.teachers import Teacher, teacher_from_state_dict
from free_common.models import ModelSpec

__all__ = ["MAIN_JOB_RUN_CONFIG", "Owner", "main_job_owners"]

logger = logging.getLogger(__name__)

DEFAULT_CACHE = Path(os.environ.get("FREEFED_OWNER_CACHE", "~/.cache/freefed/owners")).expanduser()
MAIN_JOB_RUN_CONFIG: dict[str, Any] = {
    "model.width": 32,
    "model.resnet-width": 16,
    "fed.arch-mix": "conv4:2,resnet10:1,resnet18:1",
    "fed.classes-per-owner": 5,
    "local.epochs": 30,
    "local.lr": 0.01,
    "local.batch-size": 64,
    "local.holdout": 0.2,
}
"""The main job's owner settings (``[tool.flwr.app.config]`` of ``pyproject.toml``)."""


@dataclass(frozen=True)
class Owner:
    """One trained main-job owner.

    Attributes:
        owner_id: ``"owner-007"``.
        seed: the run seed it was trained under.
        spec: its model spec.
        class_names: the meta-train class names behind outputs 0..4.
        state_dict: its weights (CPU tensors).
        holdout_accuracy: accuracy on its own held-out images.
        seconds: training wall time.
    """

    owner_id: str
    seed: int
    spec: ModelSpec
    class_names: tuple[str, ...]
    state_dict: dict[str, Tensor]
    holdout_accuracy: float
    seconds: float

    def teacher(self, *, shared_names: bool = False) -> Teacher:
        """A frozen teacher; class keys are the glyph names when ``shared_names``."""
        keys = self.class_names if shared_names else None
        return teacher_from_state_dict(
            f"s{self.seed}-{self.owner_id}", self.spec, self.state_dict, keys
        )


def _run_config(dataset: str) -> dict[str, Any]:
    """The main job's owner settings on ``dataset`` (glyphs: the keys of before the choice)."""
    if dataset == "glyphs":
        return MAIN_JOB_RUN_CONFIG
    return {**MAIN_JOB_RUN_CONFIG, "data.train": dataset}


def _cache_file(cache_dir: Path, seed: int, owners: int, dataset: str) -> Path:
    key = json.dumps({"seed": seed, "owners": owners, **_run_config(dataset)}, sort_keys=True)
    return cache_dir / f"owners-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def _train(seed: int, owners: int, dataset: str) -> list[Owner]:
    run_config = {**_run_config(dataset), "seed": seed}
    settings = TrainSettings.from_run_config(run_config)
    names = load_split(dataset, "train").class_names
    trained = []
    for pid in range(owners):
        plan = prepare_owner({"partition-id": pid, "num-partitions": owners}, run_config)
        started = time.perf_counter()
        submission = train_and_submit(plan, settings)
        card = decode_card(submission.card)
        state = {k: torch.from_numpy(v.copy()) for k, v in submission.tensors.items()}
        classes = tuple(names.index(n) for n in plan.data.class_names)
        trained.append(
            Owner(
                plan.owner_id,
                seed,
                spec_from_card(card),
                tuple(names[c] for c in classes),
                state,
                float(card.metrics.holdout_accuracy),
                time.perf_counter() - started,
            )
        )
        logger.info(
            "seed %d %s %s: hold-out %.2f",
            seed,
            plan.owner_id,
            plan.spec.arch,
            trained[-1].holdout_accuracy,
        )
    return trained


def main_job_owners(
    seed: int, *, owners: int = 20, cache_dir: Path | None = DEFAULT_CACHE, dataset: str = "glyphs"
) -> list[Owner]:
    """The ``owners`` honest owners of the main job on ``dataset`` at run seed ``seed`` (cached).

    ``dataset`` is the run config's ``data.train`` (``"glyphs"``, ``"icons"``).
    """
    path = _cache_file(cache_dir, seed, owners, dataset) if cache_dir is not None else None
    if path is not None and path.exists():
        rows: list[dict[str, Any]] = torch.load(path, weights_only=True)
        return [
            Owner(
                r["owner_id"],
                int(r["seed"]),
                ModelSpec.from_dict(r["spec"]),
                tuple(r["class_names"]),
                dict(r["state_dict"]),
                float(r["holdout"]),
                float(r["seconds"]),
            )
            for r in rows
        ]
    trained = _train(seed, owners, dataset)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [
            {
                "owner_id": o.owner_id,
                "seed": o.seed,
                "spec": o.spec.to_dict(),
                "class_names": list(o.class_names),
                "state_dict": o.state_dict,
                "holdout": o.holdout_accuracy,
                "seconds": o.seconds,
            }
            for o in trained
        ]
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(rows, tmp)
        tmp.replace(path)
    return trained


def main(argv: list[str] | None = None) -> int:
    """Train (or load) the owners of the given seeds and print their hold-out accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--owners", type=int, default=20)
    parser.add_argument("--dataset", default="glyphs", help="data.train: glyphs or icons")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    for seed in (int(s) for s in args.seeds.split(",")):
        for o in main_job_owners(seed, owners=args.owners, dataset=args.dataset):
            print(f"seed {seed} {o.owner_id} {o.spec.arch}: hold-out {o.holdout_accuracy:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
