"""Meta-test images for on-device evaluation, read with numpy only (no torch).

Sources: the embedded glyph benchmark (``free_common/data/assets/glyphs-v1.npz``) and
Fashion-MNIST's IDX files. Episodes are sampled with numpy's generator, so a seed gives
the same episodes everywhere.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = [
    "DEFAULT_FASHION_ROOT",
    "DEFAULT_GLYPHS",
    "DataError",
    "EdgeEpisode",
    "LabelledImages",
    "accuracy_ci95",
    "load_fashion_idx",
    "load_glyph_split",
    "sample_episodes",
]

DEFAULT_GLYPHS = Path(__file__).resolve().parents[2] / "free_common/data/assets/glyphs-v1.npz"
DEFAULT_FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
_IDX_IMAGES, _IDX_LABELS = 0x00000803, 0x00000801


class DataError(ValueError):
    """A dataset file is missing or not in the expected format."""


@dataclass(frozen=True)
class LabelledImages:
    """uint8 images (N, C, H, W) with int64 class labels (N,)."""

    images: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.int64]


@dataclass(frozen=True)
class EdgeEpisode:
    """One N-way K-shot episode as float32 arrays in [0, 1]."""

    support: npt.NDArray[np.float32]
    support_labels: npt.NDArray[np.int64]
    query: npt.NDArray[np.float32]
    query_labels: npt.NDArray[np.int64]


def _npz_arrays(path: Path) -> dict[str, npt.NDArray[np.generic]]:
    """Every array of an ``.npz`` (no pickles)."""
    if not path.exists():
        raise DataError(f"glyph archive not found: {path}")
    with np.load(path, allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files}


def load_glyph_split(path: str | Path = DEFAULT_GLYPHS, split: str = "test") -> LabelledImages:
    """One meta-split of the glyph archive: array ``<split>`` of shape (classes, per_class, H, W).

    Raises:
        DataError: the archive or the split is missing, or the array has another shape.
    """
    arrays = _npz_arrays(Path(path))
    if split not in arrays:
        raise DataError(f"{path}: no split {split!r}; arrays {sorted(arrays)}")
    grid = arrays[split]
    if grid.ndim != 4 or grid.dtype != np.uint8:
        raise DataError(
            f"{path}: {split} must be uint8 (classes, per_class, H, W), got {grid.shape}"
        )
    n_classes, per_class, height, width = grid.shape
    images = np.ascontiguousarray(grid.reshape(n_classes * per_class, 1, height, width))
    labels = np.repeat(np.arange(n_classes, dtype=np.int64), per_class)
    return LabelledImages(images, labels)


def _read_idx(path: Path, magic: int) -> npt.NDArray[np.uint8]:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 8 or int.from_bytes(raw[:4], "big") != magic:
        raise DataError(f"{path}: not an IDX file with magic {magic:#010x}")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != math.prod(dims):
        raise DataError(f"{path}: {body.size} values for shape {dims} (truncated?)")
    return body.reshape(dims)


def _idx_file(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).exists():
            return root / name
    raise DataError(f"{root}: missing {stem}(.gz)")


def load_fashion_idx(root: str | Path = DEFAULT_FASHION_ROOT) -> LabelledImages:
    """All 70,000 Fashion-MNIST images (train + t10k), (N, 1, 28, 28) uint8."""
    folder = Path(root)
    parts = [
        (
            _read_idx(_idx_file(folder, f"{p}-images-idx3-ubyte"), _IDX_IMAGES),
            _read_idx(_idx_file(folder, f"{p}-labels-idx1-ubyte"), _IDX_LABELS),
        )
        for p in ("train", "t10k")
    ]
    images = np.concatenate([p[0] for p in parts])[:, None]
    labels = np.concatenate([p[1] for p in parts]).astype(np.int64)
    return LabelledImages(images, labels)


def _to_float(images: npt.NDArray[np.uint8], channels: int, size: int) -> npt.NDArray[np.float32]:
    """uint8 (B, C0, H, W) to float32 (B, channels, size, size) in [0, 1]."""
    if images.shape[2:] != (size, size):
        resized = [
            np.asarray(Image.fromarray(img[0]).resize((size, size), Image.Resampling.BILINEAR))
            for img in images
        ]
        images = np.stack(resized)[:, None]
    if images.shape[1] != channels:
        images = np.repeat(images[:, :1], channels, axis=1)
    return images.astype(np.float32) / 255.0


def sample_episodes(
    data: LabelledImages,
    *,
    n_way: int,
    k_shot: int,
    q_query: int,
    episodes: int,
    seed: int,
    channels: int,
    size: int,
) -> Iterator[EdgeEpisode]:
    """Yield reproducible episodes (classes and images drawn without replacement)."""
    by_class = [np.flatnonzero(data.labels == c) for c in range(int(data.labels.max()) + 1)]
    eligible = [c for c, idx in enumerate(by_class) if len(idx) >= k_shot + q_query]
    if len(eligible) < n_way:
        raise DataError(f"only {len(eligible)} classes have {k_shot + q_query} images")
    rng = np.random.default_rng(seed)
    for _ in range(episodes):
        classes = rng.choice(eligible, size=n_way, replace=False)
        picks = [rng.choice(by_class[c], size=k_shot + q_query, replace=False) for c in classes]
        support = np.concatenate([p[:k_shot] for p in picks])
        query = np.concatenate([p[k_shot:] for p in picks])
        yield EdgeEpisode(
            _to_float(data.images[support], channels, size),
            np.repeat(np.arange(n_way, dtype=np.int64), k_shot),
            _to_float(data.images[query], channels, size),
            np.repeat(np.arange(n_way, dtype=np.int64), q_query),
        )


def accuracy_ci95(accuracies: npt.ArrayLike) -> tuple[float, float]:
    """Mean and 95% normal-approximation half-width (1.96 s / sqrt(n)) of per-episode accuracy."""
    acc = np.asarray(accuracies, dtype=np.float64)
    if acc.size == 0:
        raise ValueError("no episodes")
    half = 1.96 * acc.std(ddof=1) / math.sqrt(acc.size) if acc.size > 1 else float("nan")
    return float(acc.mean()), float(half)
