"""Fashion-MNIST (Xiao et al., 2017) as a cross-domain meta-test set.

Reads the four IDX files (gzip-compressed or not), e.g. from Debian's
``dataset-fashion-mnist`` package, which installs them in :data:`DEFAULT_ROOT`. With only
10 classes the set cannot be split into disjoint meta-train and meta-test classes, so only
``split="test"`` exists: all 70,000 images (train and t10k files) of all 10 classes.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt

from free_common.data.base import ClassImages, DatasetError
from free_common.data.image_io import check_request, prepare_arrays
from free_common.data.layout import Layout

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` installs the IDX files."""

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

LAYOUT = Layout(
    "fashion-mnist",
    """<root>/   (default /usr/share/datasets/fashion-mnist: apt install dataset-fashion-mnist)
  train-images-idx3-ubyte.gz   IDX magic 0x00000803, (60000, 28, 28) uint8
  train-labels-idx1-ubyte.gz   IDX magic 0x00000801, (60000,) uint8 in 0..9
  t10k-images-idx3-ubyte.gz    (10000, 28, 28)
  t10k-labels-idx1-ubyte.gz    (10000,)
  (each file may also be stored without .gz)""",
)

_UBYTE = 0x08
_SIDE = 28


def load_fashion_mnist(
    root: str | Path | None = None,
    split: str = "test",
    *,
    image_size: int = 28,
    channels: int = 1,
    workers: int | None = None,
) -> ClassImages:
    """Load Fashion-MNIST as one meta-test split of 10 classes.

    Args:
        root: folder with the IDX files; ``None`` means :data:`DEFAULT_ROOT`.
        split: must be ``"test"`` (see the module docstring).
        image_size: output side S (28 native; e.g. 32 to match a glyph-trained model).
        channels: 1 (native grey) or 3 (grey repeated).
        workers: resize threads; ``None`` picks a default.

    Returns:
        ClassImages named ``fashion-mnist/test``, images (70000, channels, S, S), labels in
        0..9 with the standard :data:`CLASS_NAMES`.

    Raises:
        DatasetError: ``split`` other than ``"test"``, a missing, truncated or malformed file.
    """
    folder = DEFAULT_ROOT if root is None else Path(root)
    if split != "test":
        LAYOUT.check_split(split)
        raise DatasetError(
            f"fashion-mnist: split {split!r} does not exist; Fashion-MNIST has only 10 "
            "classes, too few for disjoint meta-train/val/test classes, so it serves only "
            "as a cross-domain meta-test set: use split='test'"
        )
    check_request(image_size, channels)
    images, labels = [], []
    for prefix in ("train", "t10k"):
        pixels = _read_idx(folder, f"{prefix}-images-idx3-ubyte", 3)
        targets = _read_idx(folder, f"{prefix}-labels-idx1-ubyte", 1)
        if pixels.shape[1:] != (_SIDE, _SIDE) or targets.shape[0] != pixels.shape[0]:
            raise LAYOUT.error(
                f"{prefix} files disagree: images {pixels.shape}, labels {targets.shape}; "
                f"expected (N, {_SIDE}, {_SIDE}) and (N,)",
                folder,
            )
        if targets.size and targets.max() >= len(CLASS_NAMES):
            raise LAYOUT.error(f"{prefix} labels outside 0..{len(CLASS_NAMES) - 1}", folder)
        images.append(pixels)
        labels.append(targets)
    order = np.argsort(np.concatenate(labels), kind="stable")
    stacked = np.concatenate(images)[order][:, None]
    return ClassImages(
        name="fashion-mnist/test",
        images=prepare_arrays(stacked, image_size, channels, workers=workers),
        labels=np.concatenate(labels)[order].astype(np.int64),
        class_names=CLASS_NAMES,
    )


def _read_idx(folder: Path, stem: str, ndim: int) -> npt.NDArray[np.uint8]:
    """Read ``stem`` or ``stem.gz`` as an IDX array of unsigned bytes with ``ndim`` dims."""
    path = folder / f"{stem}.gz"
    if not path.is_file():
        path = LAYOUT.require_file(folder / stem, folder)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise LAYOUT.error(f"truncated or corrupt gzip file {path}: {err}", folder) from err
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:3] != bytes([0, 0, _UBYTE]) or raw[3] != ndim:
        expected = (_UBYTE << 8) | ndim
        raise LAYOUT.error(
            f"{path}: not an IDX file of unsigned bytes with {ndim} dimension(s) "
            f"(magic {raw[:4].hex() or 'missing'}, expected {expected:08x})",
            folder,
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != math.prod(dims):
        raise LAYOUT.error(
            f"{path}: header says {dims} = {math.prod(dims)} bytes of data, "
            f"found {len(raw) - header} (truncated or corrupt)",
            folder,
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
