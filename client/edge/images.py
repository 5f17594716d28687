"""Read images from disk into float arrays in [0, 1] (Pillow + numpy).

Pillow is the edge runtime's one image dependency: PNG and JPEG decoding is not worth
re-implementing.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from free_common.files import UnreadableFileError, read_regular_file

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageReadError",
    "SupportSet",
    "decode_image",
    "list_images",
    "load_image",
    "load_support_folder",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
MAX_IMAGE_BYTES = 64 * 1024 * 1024


class ImageReadError(ValueError):
    """A file is not a readable image, or a support folder is laid out wrongly."""


@dataclass(frozen=True)
class SupportSet:
    """Support images read from one sub-folder per class.

    Attributes:
        images: (S, C, H, W) float32 in [0, 1].
        labels: (S,) int64 class index (sorted folder order).
        class_names: folder name of each class.
    """

    images: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]
    class_names: tuple[str, ...]


def decode_image(path: str | Path, channels: int, size: int) -> npt.NDArray[np.uint8]:
    """Decode ``path``, convert to grey (1) or RGB (3), resize to size x size: uint8 (C, H, W).

    Transparent pixels are composited on white first and grey is ITU-R 601 luma, the same
    conversion as the server's loaders (``free_common.data.image_io``).

    Only a regular file of at most ``MAX_IMAGE_BYTES`` is read (a named pipe or device
    called ``x.png`` is refused, never waited on).
    """
    try:
        data = read_regular_file(path, MAX_IMAGE_BYTES)
    except UnreadableFileError as err:
        raise ImageReadError(f"cannot read image {path}: {err}") from err
    try:
        with Image.open(io.BytesIO(data)) as raw:
            img = _on_white(raw).convert("L" if channels == 1 else "RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        pixels = np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as err:
        raise ImageReadError(f"cannot read image {path}: {err}") from err
    return pixels[None] if channels == 1 else np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _on_white(img: Image.Image) -> Image.Image:
    """Composite transparent pixels on white, as the server's loaders do."""
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode not in ("RGBA", "LA", "PA"):
        return img
    rgba = img.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)


def load_image(path: str | Path, channels: int, size: int) -> npt.NDArray[np.float32]:
    """:func:`decode_image` as float32 (C, H, W) in [0, 1]."""
    return decode_image(path, channels, size).astype(np.float32) / 255.0


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder`` (by suffix), sorted by name."""
    root = Path(folder)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise ImageReadError(f"no such file or folder: {root}")
    return sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def load_support_folder(folder: str | Path, channels: int, size: int) -> SupportSet:
    """Read ``folder/<class name>/*.png|jpg`` into a support set.

    Raises:
        ImageReadError: fewer than two class folders, an empty class, or an unreadable file.
    """
    root = Path(folder)
    classes = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if len(classes) < 2:
        raise ImageReadError(f"{root} needs at least two class sub-folders of images")
    images, labels = [], []
    for label, class_dir in enumerate(classes):
        files = list_images(class_dir)
        if not files:
            raise ImageReadError(f"class folder {class_dir} holds no images")
        images += [load_image(f, channels, size) for f in files]
        labels += [label] * len(files)
    return SupportSet(
        np.stack(images).astype(np.float32),
        np.asarray(labels, dtype=np.int64),
        tuple(p.name for p in classes),
    )
