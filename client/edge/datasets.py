"""Meta-test images for on-device evaluation, read with numpy and Pillow only (no torch).

Sources: the embedded benchmarks (``free_common/data/assets/glyphs-v1.npz`` and
``icons-v1.npz``), Fashion-MNIST's IDX files, and a folder of class folders (one's own
classes). Every file is read with :func:`free_common.files.read_regular_file` (regular
files only, bounded). Episodes are sampled with numpy's generator, so a seed gives the same
episodes everywhere.
"""

from __future__ import annotations

import gzip
import io
import math
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from client.edge.images import ImageReadError, decode_image, list_images
from free_common.files import MissingFileError, UnreadableFileError, read_regular_file

__all__ = [
    "DEFAULT_FASHION_ROOT",
    "DEFAULT_GLYPHS",
    "DEFAULT_ICONS",
    "DataError",
    "EdgeEpisode",
    "LabelledImages",
    "accuracy_ci95",
    "load_fashion_idx",
    "load_glyph_split",
    "load_image_folder",
    "load_npz_split",
    "sample_episodes",
]

_ASSETS = Path(__file__).resolve().parents[2] / "free_common/data/assets"
DEFAULT_GLYPHS = _ASSETS / "glyphs-v1.npz"
DEFAULT_ICONS = _ASSETS / "icons-v1.npz"
DEFAULT_FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
MAX_ARCHIVE_BYTES = 512 * 1024 * 1024
"""Largest data file read (compressed), and largest total of an archive's arrays."""
_IDX_IMAGES, _IDX_LABELS = 0x00000803, 0x00000801
_LUMA = np.array([19595, 38470, 7471], dtype=np.uint32)


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


def _read(path: Path, what: str) -> bytes:
    """The bytes of the regular file ``path`` (bounded), or a DataError naming ``what``."""
    try:
        return read_regular_file(path, MAX_ARCHIVE_BYTES)
    except MissingFileError as err:
        raise DataError(f"{what} not found: {path}") from err
    except UnreadableFileError as err:
        raise DataError(f"{what} refused: {err}") from err


def _npz_arrays(path: Path) -> dict[str, npt.NDArray[np.generic]]:
    """Every array of an ``.npz`` (no pickles; at most ``MAX_ARCHIVE_BYTES`` unpacked)."""
    raw = io.BytesIO(_read(path, "archive"))
    try:
        with zipfile.ZipFile(raw) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise DataError(f"{path}: not a readable .npz archive: {err}") from err
    if unpacked > MAX_ARCHIVE_BYTES:
        raise DataError(f"{path}: {unpacked} bytes unpacked, limit {MAX_ARCHIVE_BYTES}")
    try:
        with np.load(raw, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a readable .npz archive: {err}") from err


def load_npz_split(path: str | Path, split: str = "test") -> LabelledImages:
    """One meta-split of an embedded benchmark's archive, in either of its two layouts.

    - glyphs: array ``<split>`` of shape (classes, per_class, H, W), grey;
    - icons: array ``<split>`` of shape (N, C, H, W) and ``<split>_labels`` of shape (N,).

    Raises:
        DataError: the archive or the split is missing, or the arrays have other shapes.
    """
    arrays = _npz_arrays(Path(path))
    if split not in arrays:
        raise DataError(f"{path}: no split {split!r}; arrays {sorted(arrays)}")
    grid, labels = arrays[split], arrays.get(f"{split}_labels")
    if grid.dtype != np.uint8 or grid.ndim != 4:
        raise DataError(f"{path}: {split} must be uint8 with 4 dimensions, got {grid.shape}")
    if labels is None:
        n_classes, per_class, height, width = grid.shape
        images = np.ascontiguousarray(grid.reshape(n_classes * per_class, 1, height, width))
        return LabelledImages(images, np.repeat(np.arange(n_classes, dtype=np.int64), per_class))
    if grid.shape[1] not in (1, 3) or labels.shape != (grid.shape[0],):
        raise DataError(
            f"{path}: {split} must be (N, 1 or 3, H, W) with {split}_labels (N,), got "
            f"{grid.shape} and {labels.shape}"
        )
    if labels.dtype.kind not in "iu" or (labels.size and labels.min() < 0):
        raise DataError(f"{path}: {split}_labels must be non-negative integers")
    return LabelledImages(np.ascontiguousarray(grid), labels.astype(np.int64))


def load_glyph_split(path: str | Path = DEFAULT_GLYPHS, split: str = "test") -> LabelledImages:
    """One meta-split of the glyph archive (see :func:`load_npz_split`)."""
    return load_npz_split(path, split)


def load_image_folder(root: str | Path, channels: int, size: int) -> LabelledImages:
    """Every image of a folder of class folders, at ``channels`` x ``size`` x ``size``.

    Classes are the sub-folders in name order; images are converted and resized as the
    server's loaders do.

    Raises:
        DataError: a missing folder, no class folders, an empty class folder, or an
            unreadable image (named).
    """
    folder = Path(root)
    if not folder.is_dir():
        raise DataError(f"no such folder: {folder}")
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{folder} holds no class folders (one sub-folder of images per class)")
    images: list[npt.NDArray[np.uint8]] = []
    labels: list[int] = []
    try:
        for label, class_dir in enumerate(classes):
            files = [f for f in list_images(class_dir) if not f.name.startswith(".")]
            if not files:
                raise DataError(f"class folder {class_dir} holds no images")
            images += [decode_image(f, channels, size) for f in files]
            labels += [label] * len(files)
    except ImageReadError as err:
        raise DataError(str(err)) from err
    return LabelledImages(np.stack(images), np.asarray(labels, dtype=np.int64))


def _read_idx(path: Path, magic: int) -> npt.NDArray[np.uint8]:
    raw = _read(path, "IDX file")
    if path.suffix == ".gz":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as unzipped:
                raw = unzipped.read(MAX_ARCHIVE_BYTES + 1)
        except (OSError, EOFError) as err:
            raise DataError(f"{path}: not a gzip file: {err}") from err
        if len(raw) > MAX_ARCHIVE_BYTES:
            raise DataError(f"{path}: more than {MAX_ARCHIVE_BYTES} bytes unpacked")
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


def _convert_channels(images: npt.NDArray[np.uint8], channels: int) -> npt.NDArray[np.uint8]:
    """(B, C0, H, W) to (B, channels, H, W): RGB to grey by ITU-R 601 luma, grey repeated."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1:
        return np.repeat(images, channels, axis=1)
    luma = np.tensordot(_LUMA, images.astype(np.uint32), axes=([0], [1]))  # (B, H, W)
    return ((luma + 0x8000) >> 16).astype(np.uint8)[:, None]


def _to_float(images: npt.NDArray[np.uint8], channels: int, size: int) -> npt.NDArray[np.float32]:
    """uint8 (B, C0, H, W) to float32 (B, channels, size, size) in [0, 1]."""
    images = _convert_channels(images, channels)
    if images.shape[2:] != (size, size):
        images = np.stack([_resize(img, size) for img in images])
    return images.astype(np.float32) / 255.0


def _resize(image: npt.NDArray[np.uint8], size: int) -> npt.NDArray[np.uint8]:
    """(C, H, W) uint8 to (C, size, size), Pillow bilinear."""
    pil = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
    out = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR))
    return out[None] if out.ndim == 2 else out.transpose(2, 0, 1)


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
        raise DataError(
            f"only {len(eligible)} classes have {k_shot + q_query} images "
            f"({k_shot} shots + {q_query} queries); a {n_way}-way episode needs {n_way}"
        )
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
