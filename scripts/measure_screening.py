"""Recovery quality of trained, random and corrupted teachers: where screening sets its bar.

Teachers are Conv4-32 (32x32 grey, 5-way) trained on Fashion-MNIST subsets (150 images per
class, 20 epochs); their corruptions are: Gaussian noise of 1x each tensor's std, weights
shuffled within each tensor, and a random initialisation. Each is inverted from scratch with
the ``cpu`` preset's generator (8 images per class) for 10, 30 and 60 steps; the teacher's
accuracy and confidence on its recovered images are what ``free_common.free.screening``
thresholds. Needs Debian's ``dataset-fashion-mnist``.

Usage: ``python -m scripts.measure_screening [--out scripts/results/screening.json]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from client.local_training import train_local_classifier
from free_common.config import FreeConfig
from free_common.data.base import ClassImages
from free_common.data.fashion_mnist import load_fashion_mnist
from free_common.free.scratch_inversion import invert_from_scratch
from free_common.free.teachers import teacher_from_state_dict
from free_common.models import ModelSpec, build_model

SPEC = ModelSpec("conv4", 1, 32, 5, 32)
CLASS_SETS = ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [0, 2, 4, 6, 8])
PER_CLASS = 150


def subset(data: ClassImages, classes: list[int], rng: np.random.Generator) -> ClassImages:
    """``PER_CLASS`` random images of each of ``classes``, relabelled 0..4."""
    rows = [rng.choice(np.flatnonzero(data.labels == c), PER_CLASS, replace=False) for c in classes]
    labels = np.repeat(np.arange(len(classes)), PER_CLASS).astype(np.int64)
    return ClassImages(
        "fashion", data.images[np.concatenate(rows)], labels, tuple(map(str, classes))
    )


def corrupted(state: dict[str, Tensor], seed: int) -> dict[str, dict[str, Tensor]]:
    """The noisy and the shuffled corruption of a trained state dict."""
    g = torch.Generator().manual_seed(seed)
    noisy, shuffled = {}, {}
    for k, v in state.items():
        weight = v.is_floating_point() and "running" not in k and v.numel() > 1
        noisy[k] = v + torch.randn(v.shape, generator=g) * v.std() if weight else v
        perm = torch.randperm(v.numel(), generator=g)
        shuffled[k] = v.flatten()[perm].view_as(v) if weight else v
    return {"noise1x": noisy, "shuffled": shuffled}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("scripts/results/screening.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = load_fashion_mnist(image_size=32)
    rng = np.random.default_rng(0)
    teachers: dict[str, dict[str, Tensor]] = {}
    for i, classes in enumerate(CLASS_SETS):
        result = train_local_classifier(subset(data, classes, rng), SPEC, epochs=20, seed=i)
        teachers[f"trained{i}"] = result.state_dict
        for kind, state in corrupted(result.state_dict, 100 + i).items():
            teachers[f"{kind}{i}"] = state
        with torch.random.fork_rng():
            torch.manual_seed(200 + i)
            teachers[f"random{i}"] = build_model(SPEC).state_dict()
    inversion = FreeConfig.preset("paper-cpu").inversion
    rows = []
    for name, state in teachers.items():
        teacher = teacher_from_state_dict(name, SPEC, state)
        for steps in (10, 30, 60):
            start = time.perf_counter()
            g = torch.Generator().manual_seed(7)
            r = invert_from_scratch(teacher, inversion, g, steps=steps, images_per_class=8)
            row = {"teacher": name, "steps": steps, "accuracy": r.recovered.accuracy}
            row |= {"confidence": r.recovered.confidence, "seconds": time.perf_counter() - start}
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
