"""Build (and cache on disk) a pool of pre-trained 5-way teachers for the benchmarks.

Every teacher is trained with :func:`client.local_training.train_local_classifier` on
``classes_per_teacher`` classes drawn at random (without replacement within a teacher,
with overlap across teachers, as in the FREE pre-training of the public code's
``tools.py``) from the meta-train split. Architectures cycle through ``archs`` (teacher
``i`` gets ``archs[i % len(archs)]``). The pool depends on the data, the settings and
the pool seed only; the cache file name is a hash of all three, so a pool is trained once
and reused by every method and run seed that asks for the same settings.

Usage: ``python -m scripts.bench.teacher_pool --dataset glyphs --archs conv4 --teachers 100``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from client.local_training import stratified_split, train_local_classifier
from free_common.data.base import ClassImages, check_split_name
from free_common.free.teachers import Teacher, teacher_from_state_dict
from free_common.models import ModelSpec

__all__ = [
    "DATASETS",
    "PoolError",
    "PoolMember",
    "PoolSettings",
    "build_pool",
    "data_fingerprint",
    "load_split",
    "main",
    "member_images",
    "member_seed",
    "synthetic_split",
    "teachers_of",
]

logger = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = ("glyphs", "synthetic")
DEFAULT_CACHE = Path(os.environ.get("FREEFED_POOL_CACHE", "~/.cache/freefed/pools")).expanduser()
_SYNTHETIC_CLASSES = {"train": 40, "val": 12, "test": 12}
HOLDOUT = 0.2
"""Share of each class a member holds out to choose its epoch (``train_local_classifier``'s)."""


class PoolError(ValueError):
    """Bad pool settings (unknown architecture, too few classes) or a corrupt cache file."""


@dataclass(frozen=True)
class PoolSettings:
    """What determines a pool (together with the meta-train data it is trained on).

    Attributes:
        archs: architectures, cycled over the teachers (``ModelSpec.arch`` names).
        teachers: number of teachers.
        classes_per_teacher: classes of each teacher (5-way).
        epochs: local training epochs of each teacher.
        conv4_width: Conv4 filters (32, as published).
        resnet_width: ResNet base width (16, the CPU default).
        seed: pool seed (class draws and every teacher's training seed).
        vocabulary: draw every teacher's classes from this many meta-train classes only
            (a seeded choice), so that teachers share classes as a collaboration with a
            common label vocabulary would; 0: from every class.
    """

    archs: tuple[str, ...] = ("conv4",)
    teachers: int = 100
    classes_per_teacher: int = 5
    epochs: int = 30
    conv4_width: int = 32
    resnet_width: int = 16
    seed: int = 0
    vocabulary: int = 0

    def __post_init__(self) -> None:
        """Validate ranges."""
        if not self.archs:
            raise PoolError("archs must name at least one architecture")
        if self.teachers < 1 or self.classes_per_teacher < 2 or self.epochs < 1:
            raise PoolError(f"need teachers >= 1, classes_per_teacher >= 2, epochs >= 1: {self}")
        if self.vocabulary and self.vocabulary < self.classes_per_teacher:
            raise PoolError(f"vocabulary {self.vocabulary} < {self.classes_per_teacher} classes")

    def spec(self, index: int, image_shape: tuple[int, int, int]) -> ModelSpec:
        """The model spec of teacher ``index`` for images of ``image_shape`` (C, H, W)."""
        arch = self.archs[index % len(self.archs)]
        width = self.conv4_width if arch == "conv4" else self.resnet_width
        channels, size, _ = image_shape
        return ModelSpec(
            arch=arch,
            in_channels=channels,
            image_size=size,
            num_classes=self.classes_per_teacher,
            width=width,
            mean=(0.5,) * channels,
            std=(0.5,) * channels,
        )


@dataclass(frozen=True)
class PoolMember:
    """One trained teacher of the pool.

    Attributes:
        teacher_id: ``"t000"``, ``"t001"``, ...
        spec: its model spec.
        classes: the meta-train class indices behind outputs 0..C-1.
        state_dict: its weights (CPU tensors).
        holdout_accuracy: accuracy on its own held-out images.
        seconds: its training wall time.
    """

    teacher_id: str
    spec: ModelSpec
    classes: tuple[int, ...]
    state_dict: dict[str, Tensor]
    holdout_accuracy: float
    seconds: float

    def teacher(self) -> Teacher:
        """A fresh frozen :class:`Teacher` module (own class keys: ``"<id>/<i>"``)."""
        return teacher_from_state_dict(self.teacher_id, self.spec, self.state_dict)


def teachers_of(members: Sequence[PoolMember]) -> list[Teacher]:
    """One :class:`Teacher` per member, in order."""
    return [m.teacher() for m in members]


def synthetic_split(split: str, *, per_class: int = 20, size: int = 32) -> ClassImages:
    """A learnable stand-in for the glyphs: smooth random class prototypes plus noise.

    Each class is an 8x8 random pattern upsampled to ``size`` and binarised; its images
    are that prototype shifted by up to 2 pixels with 10% pixel noise. Splits use
    disjoint prototype seeds. Shape (N, 1, size, size), uint8.
    """
    check_split_name(split)
    n_classes = _SYNTHETIC_CLASSES[split]
    rng = np.random.default_rng({"train": 1, "val": 2, "test": 3}[split])
    coarse = torch.from_numpy(rng.random((n_classes, 1, 8, 8)).astype(np.float32))
    protos = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear") > 0.5
    images = np.empty((n_classes * per_class, 1, size, size), dtype=np.uint8)
    for c in range(n_classes):
        for j in range(per_class):
            dy, dx = rng.integers(-2, 3, size=2)
            shifted = np.roll(protos[c].numpy(), (int(dy), int(dx)), axis=(1, 2))
            noisy = np.logical_xor(shifted, rng.random(shifted.shape) < 0.1)
            images[c * per_class + j] = (noisy * 255).astype(np.uint8)
    labels = np.repeat(np.arange(n_classes, dtype=np.int64), per_class)
    names = tuple(f"synthetic-{split}-{c}" for c in range(n_classes))
    return ClassImages(f"synthetic/{split}", images, labels, names)


def load_split(dataset: str, split: str) -> ClassImages:
    """A meta-split of ``"glyphs"`` (the embedded benchmark) or ``"synthetic"``."""
    if dataset == "synthetic":
        return synthetic_split(split)
    if dataset == "glyphs":
        module = importlib.import_module("free_common.data.glyphs")
        data = module.load_glyphs(split)
        if not isinstance(data, ClassImages):
            raise PoolError(f"load_glyphs returned {type(data).__name__}, not ClassImages")
        return data
    raise PoolError(f"unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}")


def data_fingerprint(data: ClassImages) -> str:
    """SHA-256 (hex, 16 chars) of the pixels, labels and class names."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(data.images).tobytes())
    digest.update(np.ascontiguousarray(data.labels).tobytes())
    digest.update("\n".join(data.class_names).encode())
    return digest.hexdigest()[:16]


def cache_path(data: ClassImages, settings: PoolSettings, cache_dir: Path) -> Path:
    """Cache file of pools for ``data`` and ``settings`` whatever their size.

    Teacher ``i`` depends only on the data, the settings other than ``teachers`` and
    ``i`` (class draws are sequential, training seeds are per index), so a pool of n
    teachers is the first n of any larger pool: one file serves every size.
    """
    fields = {k: v for k, v in asdict(settings).items() if k != "teachers"}
    if not settings.vocabulary:
        del fields["vocabulary"]  # pools cached before the field existed keep their file
    key = json.dumps({"data": data_fingerprint(data), **fields}, sort_keys=True)
    name = hashlib.sha256(key.encode()).hexdigest()[:20]
    return cache_dir / f"pool-{name}.pt"


def _draw_classes(num_classes: int, settings: PoolSettings) -> list[tuple[int, ...]]:
    if num_classes < settings.classes_per_teacher:
        raise PoolError(
            f"meta-train has {num_classes} classes, fewer than {settings.classes_per_teacher}"
        )
    rng = np.random.default_rng(settings.seed)
    if settings.vocabulary:
        if settings.vocabulary > num_classes:
            raise PoolError(f"vocabulary {settings.vocabulary} > {num_classes} meta-train classes")
        words = np.sort(rng.choice(num_classes, settings.vocabulary, replace=False))
        return [
            tuple(
                int(words[c])
                for c in rng.choice(len(words), settings.classes_per_teacher, replace=False)
            )
            for _ in range(settings.teachers)
        ]
    return [
        tuple(int(c) for c in rng.choice(num_classes, settings.classes_per_teacher, replace=False))
        for _ in range(settings.teachers)
    ]


def member_seed(settings: PoolSettings, index: int) -> int:
    """The training seed of member ``index`` (its split, initial weights and shuffling)."""
    return settings.seed * 100_003 + index


def member_images(
    data: ClassImages, settings: PoolSettings, index: int, classes: Sequence[int], part: str
) -> tuple[Tensor, Tensor]:
    """The real images member ``index`` trained on (``"train"``) or held out (``"held"``).

    The held-out part is the one the member chose its epoch on, never a training image.

    Args:
        data: the split the pool was trained on.
        settings: the pool's settings.
        index: the member's index in the pool.
        classes: its classes (``PoolMember.classes``).
        part: ``"train"`` or ``"held"``.

    Returns:
        Float images in [0, 1], (M, C, H, W), and (M,) int64 labels 0..len(classes)-1.
    """
    if part not in ("train", "held"):
        raise PoolError(f"part must be 'train' or 'held', got {part!r}")
    own = data.subset(tuple(classes))
    train, held = stratified_split(
        own.labels, own.num_classes, HOLDOUT, member_seed(settings, index)
    )
    rows = train if part == "train" else held
    images = torch.from_numpy(own.images[rows]).float().div(255.0)
    return images, torch.from_numpy(own.labels[rows]).long()


def _train_member(
    data: ClassImages, settings: PoolSettings, index: int, classes: tuple[int, ...]
) -> PoolMember:
    spec = settings.spec(index, data.image_shape)
    started = time.perf_counter()
    result = train_local_classifier(
        data.subset(classes),
        spec,
        epochs=settings.epochs,
        holdout=HOLDOUT,
        seed=member_seed(settings, index),
        device="cpu",
    )
    return PoolMember(
        teacher_id=f"t{index:03d}",
        spec=spec,
        classes=classes,
        state_dict=result.state_dict,
        holdout_accuracy=result.holdout_accuracy,
        seconds=time.perf_counter() - started,
    )


def _save(members: Sequence[PoolMember], path: Path) -> None:
    """Atomic write; a cache that already holds more teachers (another process) is kept."""
    if path.exists() and len(_load(path)) >= len(members):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = [{**asdict(m), "spec": m.spec.to_dict()} for m in members]
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _load(path: Path) -> list[PoolMember]:
    try:
        payload: list[dict[str, Any]] = torch.load(path, weights_only=True)
        return [
            PoolMember(
                teacher_id=str(row["teacher_id"]),
                spec=ModelSpec.from_dict(row["spec"]),
                classes=tuple(int(c) for c in row["classes"]),
                state_dict=dict(row["state_dict"]),
                holdout_accuracy=float(row["holdout_accuracy"]),
                seconds=float(row["seconds"]),
            )
            for row in payload
        ]
    except (KeyError, TypeError, RuntimeError, ValueError) as err:
        raise PoolError(f"corrupt pool cache {path}: {err}") from err


def build_pool(
    data: ClassImages,
    settings: PoolSettings,
    *,
    cache_dir: Path | None = DEFAULT_CACHE,
    progress: bool = True,
) -> list[PoolMember]:
    """Train the pool described by ``settings`` on ``data`` (meta-train), or load it.

    Args:
        data: the meta-train split.
        settings: pool size, architectures, epochs and seed.
        cache_dir: where pools are cached (None: no cache).
        progress: tqdm bar over teachers.

    Returns:
        ``settings.teachers`` members in id order.
    """
    path = cache_path(data, settings, cache_dir) if cache_dir is not None else None
    cached = _load(path) if path is not None and path.exists() else []
    if len(cached) >= settings.teachers:
        logger.info("pool of %d teachers loaded from %s", settings.teachers, path)
        return cached[: settings.teachers]
    draws = _draw_classes(data.num_classes, settings)
    members = list(cached)
    for i in tqdm(
        range(len(cached), settings.teachers),
        desc="teacher pool",
        initial=len(cached),
        total=settings.teachers,
        disable=not progress,
    ):
        members.append(_train_member(data, settings, i, draws[i]))
        if path is not None and (i + 1) % 10 == 0:
            _save(members, path)  # a killed build resumes from here
    held = [m.holdout_accuracy for m in members]
    logger.info(
        "trained %d teachers (%s) in %.0f s, hold-out accuracy mean %.3f min %.3f",
        len(members),
        "+".join(settings.archs),
        sum(m.seconds for m in members),
        float(np.mean(held)),
        float(np.min(held)),
    )
    if path is not None:
        _save(members, path)
    return members


def main(argv: list[str] | None = None) -> int:
    """Build (or load) one pool and print its summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=DATASETS, default="glyphs")
    parser.add_argument("--archs", default="conv4", help="comma-separated, e.g. conv4,resnet10")
    parser.add_argument("--teachers", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocabulary", type=int, default=0, help="classes to draw from (0: all)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    settings = PoolSettings(
        archs=tuple(a for a in args.archs.split(",") if a),
        teachers=args.teachers,
        epochs=args.epochs,
        seed=args.seed,
        vocabulary=args.vocabulary,
    )
    members = build_pool(load_split(args.dataset, "train"), settings, cache_dir=args.cache_dir)
    print(
        f"{len(members)} teachers, hold-out accuracy "
        f"{np.mean([m.holdout_accuracy for m in members]):.3f}, "
        f"{sum(m.seconds for m in members):.0f} s of training"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
