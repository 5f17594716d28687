"""Image decoding, resizing and channel conversion shared by every dataset loader.

All loaders return uint8 arrays of shape (N, C, S, S). Resizing uses Pillow's bilinear
filter, which widens its support when downscaling (an antialiased resize). Channel
conversion follows Pillow exactly: RGB to grey by ITU-R 601-2 luma
(``L = (19595 R + 38470 G + 7471 B + 2**15) >> 16``), grey to RGB by repetition, so files
decoded by Pillow and arrays converted here agree pixel for pixel.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image

from free_common.data.base import DatasetError

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp")
"""File extensions (lower case) that loaders treat as images."""

Box = tuple[float, float, float, float]
"""A crop box in source pixels: (left, top, right, bottom)."""

_MODES = {1: "L", 3: "RGB"}
_LUMA = (19595, 38470, 7471)
_CHUNK = 4096
_THREADED_PIXELS = 96 * 96
_T = TypeVar("_T")
_R = TypeVar("_R")


def check_request(image_size: int, channels: int) -> None:
    """Raise :class:`DatasetError` unless ``image_size`` >= 1 and ``channels`` is 1 or 3."""
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise DatasetError(f"image_size must be a positive int, got {image_size!r}")
    if channels not in _MODES:
        raise DatasetError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")


def default_workers() -> int:
    """Threads used to decode images: the CPU count, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def parallel_map(fn: Callable[[_T], _R], items: Sequence[_T], workers: int | None) -> list[_R]:
    """``[fn(x) for x in items]`` on a thread pool (Pillow releases the GIL while decoding)."""
    n = default_workers() if workers is None else max(1, workers)
    if n == 1 or len(items) < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(fn, items, chunksize=64))


def decode_image(
    path: Path, image_size: int, channels: int, box: Box | None = None
) -> npt.NDArray[np.uint8]:
    """Decode one image file, optionally crop it, and resize it to a square.

    Transparent images are composited on white first.

    Args:
        path: image file in any format Pillow reads.
        image_size: output side S.
        channels: 1 (grey) or 3 (RGB).
        box: optional crop region in the file's pixel coordinates.

    Returns:
        uint8 array of shape (channels, S, S).

    Raises:
        DatasetError: naming ``path`` when the file is missing, truncated or not an image.
    """
    try:
        with Image.open(path) as img:
            full = img.size
            if box is not None:
                box = _clip_box(box, full, path)
            scale = _draft(img, image_size, full, box)
            rgb = _flatten(img).convert(_MODES[channels])
            region = None if box is None else _scale_box(box, scale)
            out = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR, box=region)
    except DatasetError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        raise DatasetError(f"cannot decode image {path}: {err}") from err
    return _to_chw(np.asarray(out, dtype=np.uint8))


def decode_images(
    paths: Sequence[Path],
    image_size: int,
    channels: int,
    *,
    boxes: Sequence[Box] | None = None,
    workers: int | None = None,
) -> npt.NDArray[np.uint8]:
    """Decode many image files in parallel with :func:`decode_image`.

    Args:
        paths: N image files.
        image_size: output side S.
        channels: 1 or 3.
        boxes: optional crop box per file (N boxes).
        workers: decoding threads; ``None`` picks :func:`default_workers`.

    Returns:
        uint8 array of shape (N, channels, S, S).
    """
    check_request(image_size, channels)
    if boxes is not None and len(boxes) != len(paths):
        raise DatasetError(f"{len(boxes)} crop boxes for {len(paths)} images")
    jobs: list[tuple[Path, Box | None]] = list(
        zip(paths, boxes if boxes is not None else [None] * len(paths), strict=True)
    )
    arrays = parallel_map(
        lambda job: decode_image(job[0], image_size, channels, job[1]), jobs, workers
    )
    if not arrays:
        return np.zeros((0, channels, image_size, image_size), dtype=np.uint8)
    return np.stack(arrays)


def convert_channels(images: npt.NDArray[np.uint8], channels: int) -> npt.NDArray[np.uint8]:
    """Convert (N, C, H, W) uint8 images to ``channels`` (1 or 3) channels.

    RGB to grey uses Pillow's fixed-point ITU-R 601-2 luma; grey to RGB repeats the plane.
    """
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return np.repeat(images, 3, axis=1)
    if have == 3 and channels == 1:
        out = np.empty((images.shape[0], 1, *images.shape[2:]), dtype=np.uint8)
        for start in range(0, images.shape[0], _CHUNK):
            part = images[start : start + _CHUNK].astype(np.uint32)
            luma = part[:, 0] * _LUMA[0] + part[:, 1] * _LUMA[1] + part[:, 2] * _LUMA[2]
            out[start : start + _CHUNK, 0] = ((luma + 0x8000) >> 16).astype(np.uint8)
        return out
    raise DatasetError(f"cannot convert {have}-channel images to {channels} channels")


def resize_images(
    images: npt.NDArray[np.uint8], image_size: int, *, workers: int | None = None
) -> npt.NDArray[np.uint8]:
    """Resize (N, C, H, W) uint8 images to (N, C, S, S) with Pillow bilinear (antialiased).

    Returns ``images`` itself when it already has the requested size. Small images are
    resized on one thread: per-image overhead, not pixel work, dominates there.
    """
    n, c, h, w = images.shape
    if (h, w) == (image_size, image_size):
        return images
    if c not in _MODES:
        raise DatasetError(f"cannot resize {c}-channel images: expected 1 or 3 channels")
    out = np.empty((n, c, image_size, image_size), dtype=np.uint8)
    size = (image_size, image_size)

    def one(i: int) -> None:
        src = images[i, 0] if c == 1 else images[i].transpose(1, 2, 0)
        pil = Image.fromarray(np.ascontiguousarray(src))
        out[i] = _to_chw(np.asarray(pil.resize(size, Image.Resampling.BILINEAR)))

    small = h * w < _THREADED_PIXELS and image_size**2 < _THREADED_PIXELS
    parallel_map(one, range(n), 1 if small else workers)
    return out


def prepare_arrays(
    images: npt.NDArray[np.uint8], image_size: int, channels: int, *, workers: int | None = None
) -> npt.NDArray[np.uint8]:
    """Bring decoded (N, C, H, W) uint8 arrays to (N, channels, S, S)."""
    check_request(image_size, channels)
    return resize_images(convert_channels(images, channels), image_size, workers=workers)


def _to_chw(array: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """(H, W) or (H, W, C) to (C, H, W)."""
    if array.ndim == 2:
        return array[None]
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def _flatten(img: Image.Image) -> Image.Image:
    """Composite images with an alpha channel (or palette transparency) on white."""
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img


def _draft(
    img: Image.Image, image_size: int, full: tuple[int, int], box: Box | None
) -> tuple[float, float]:
    """Let JPEG decode at a reduced scale that still covers the output; return that scale.

    Other formats ignore the draft request and keep scale (1, 1).
    """
    if box is None:
        want = (image_size, image_size)
    else:
        bw, bh = max(box[2] - box[0], 1.0), max(box[3] - box[1], 1.0)
        want = (int(image_size * full[0] / bw) + 1, int(image_size * full[1] / bh) + 1)
    drafted = img.draft(None, want)
    if drafted is None:
        return 1.0, 1.0
    region = drafted[1]
    return (region[2] - region[0]) / full[0], (region[3] - region[1]) / full[1]


def _clip_box(box: Box, size: tuple[int, int], path: Path) -> Box:
    left, top = max(box[0], 0.0), max(box[1], 0.0)
    right, bottom = min(box[2], float(size[0])), min(box[3], float(size[1]))
    if right <= left or bottom <= top:
        raise DatasetError(f"crop box {box} lies outside image {path} of size {size}")
    return left, top, right, bottom


def _scale_box(box: Box, scale: tuple[float, float]) -> Box:
    return box[0] * scale[0], box[1] * scale[1], box[2] * scale[0], box[3] * scale[1]
