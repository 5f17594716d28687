"""Tiny fake copies of the standard datasets, written in their real on-disk formats.

Every image of class ``c`` (global class index) number ``i`` is flat: all pixels equal
``pixel_value(c, i)`` in every channel, so a test can check which class an image came from
after any resize or channel conversion (grey luma of a flat grey image is the same value).
"""

from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

SPLITS = ("train", "val", "test")


def pixel_value(class_index: int, image_index: int) -> int:
    """Flat pixel value of image ``image_index`` of class ``class_index`` (< 256)."""
    return (10 + 20 * class_index + image_index) % 256


@dataclass
class Fake:
    """Where a fake dataset was written and what it holds."""

    root: Path
    classes: dict[str, list[str]] = field(default_factory=dict)
    per_class: int = 4


def flat_image(value: int, size: int = 8, channels: int = 3) -> npt.NDArray[np.uint8]:
    """(H, W, C) uint8 image with every pixel ``value``."""
    return np.full((size, size, channels), value, dtype=np.uint8)


def save_image(path: Path, value: int, size: int = 8, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = flat_image(value, size, 3)
    image = Image.fromarray(array)
    image = image.convert(mode)
    params = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    image.save(path, **params)


# ----------------------------------------------------------------- CIFAR-100 / CIFAR-FS


def write_cifar_fs(
    root: Path,
    *,
    per_split: int = 3,
    train_per_class: int = 3,
    test_per_class: int = 1,
    names: list[str] | None = None,
    split_files: bool = True,
    protocol: int = 2,
) -> Fake:
    """CIFAR-100 python pickles (+ ``splits/bertinetto``), ``3 * per_split`` classes.

    Class ``c`` has ``train_per_class`` images in ``train`` then ``test_per_class`` in ``test``,
    with image indices continuing across the two pickles.
    """
    names = names or [f"class_{c:02d}" for c in range(3 * per_split)]
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    _pickle(base / "meta", {b"fine_label_names": [n.encode() for n in names]}, protocol)
    for part, count, offset in (
        ("train", train_per_class, 0),
        ("test", test_per_class, train_per_class),
    ):
        rows, labels = [], []
        for c in range(len(names)):
            for i in range(count):
                rows.append(np.full(3072, pixel_value(c, offset + i), dtype=np.uint8))
                labels.append(c)
        data = np.stack(rows) if rows else np.zeros((0, 3072), np.uint8)
        batch = {b"data": data, b"fine_labels": labels, b"filenames": [b"x.png"] * len(labels)}
        _pickle(base / part, batch, protocol)
    fake = Fake(root, per_class=train_per_class + test_per_class)
    for s, split in enumerate(SPLITS):
        fake.classes[split] = names[s * per_split : (s + 1) * per_split]
    if split_files:
        write_split_files(root / "splits" / "bertinetto", fake.classes)
    return fake


def write_split_files(folder: Path, classes: dict[str, list[str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, names in classes.items():
        (folder / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))


def _pickle(path: Path, value: object, protocol: int) -> None:
    path.write_bytes(pickle.dumps(value, protocol=protocol))


# ----------------------------------------------------------------- miniImageNet


def write_mini_imagenet(
    root: Path, *, per_split: int = 3, per_class: int = 4, size: int = 8
) -> Fake:
    """``images/*.jpg`` plus Ravi-Larochelle ``{train,val,test}.csv``."""
    fake = Fake(root, per_class=per_class)
    c = 0
    for split in SPLITS:
        lines = ["filename,label"]
        wnids = []
        for _ in range(per_split):
            wnid = f"n{c:08d}"
            wnids.append(wnid)
            for i in range(per_class):
                name = f"{wnid}{i + 1:08d}.jpg"
                save_image(root / "images" / name, pixel_value(c, i), size)
                lines.append(f"{name},{wnid}")
            c += 1
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
        fake.classes[split] = wnids
    return fake


# ----------------------------------------------------------------- CUB-200-2011


def write_cub(
    root: Path, *, num_classes: int = 12, per_class: int = 4, size: int = 8, boxes: bool = True
) -> Fake:
    """``CUB_200_2011/`` with its metadata files; images have a flat box inside a border.

    Each image is ``size`` x ``size``: the border is 0, the inner box (its bounding box,
    from pixel 2 to ``size - 2``) is ``pixel_value(class, i)``.
    """
    base = root / "CUB_200_2011"
    base.mkdir(parents=True)
    classes, images, labels, bboxes = [], [], [], []
    image_id = 1
    for c in range(num_classes):
        folder = f"{c + 1:03d}.Bird_{c:02d}"
        classes.append(f"{c + 1} {folder}")
        for i in range(per_class):
            rel = f"{folder}/Bird_{c:02d}_{i:04d}.jpg"
            array = np.zeros((size, size, 3), dtype=np.uint8)
            array[2 : size - 2, 2 : size - 2] = pixel_value(c, i)
            (base / "images" / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(base / "images" / rel, quality=95)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c + 1}")
            bboxes.append(f"{image_id} 2.0 2.0 {size - 4}.0 {size - 4}.0")
            image_id += 1
    for name, rows in (
        ("classes.txt", classes),
        ("images.txt", images),
        ("image_class_labels.txt", labels),
    ):
        (base / name).write_text("\n".join(rows) + "\n")
    if boxes:
        (base / "bounding_boxes.txt").write_text("\n".join(bboxes) + "\n")
    fake = Fake(root, per_class=per_class)
    for split in SPLITS:
        fake.classes[split] = [
            f"Bird_{c:02d}" for c in range(num_classes) if _cub_split(c) == split
        ]
    return fake


def _cub_split(c: int) -> str:
    return "train" if c % 2 == 0 else ("val" if c % 4 == 1 else "test")


# ----------------------------------------------------------------- Fashion-MNIST


def idx_bytes(array: npt.NDArray[np.uint8]) -> bytes:
    """An IDX file of unsigned bytes: magic 0x000008<ndim>, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_fashion_mnist(
    root: Path, *, train_per_class: int = 3, test_per_class: int = 1, gz: bool = True
) -> Fake:
    """The four IDX files (gzip-compressed when ``gz``), 10 classes, 28 x 28."""
    root.mkdir(parents=True, exist_ok=True)
    for prefix, count, offset in (
        ("train", train_per_class, 0),
        ("t10k", test_per_class, train_per_class),
    ):
        labels = np.array([c for i in range(count) for c in range(10)], dtype=np.uint8)
        index = np.array([offset + i for i in range(count) for _ in range(10)])
        images = np.stack(
            [
                np.full((28, 28), pixel_value(int(c), int(i)), np.uint8)
                for c, i in zip(labels, index, strict=True)
            ]
        )
        for stem, array in (
            (f"{prefix}-images-idx3-ubyte", images),
            (f"{prefix}-labels-idx1-ubyte", labels),
        ):
            data = idx_bytes(array)
            if gz:
                (root / f"{stem}.gz").write_bytes(gzip.compress(data))
            else:
                (root / stem).write_bytes(data)
    return Fake(root, {"test": [str(c) for c in range(10)]}, train_per_class + test_per_class)


# ----------------------------------------------------------------- ImageFolder


def write_image_folder(
    root: Path,
    *,
    classes: tuple[str, ...] = ("cat", "ant", "bee"),
    per_class: int = 4,
    size: int = 8,
) -> Fake:
    """``<root>/<class>/*.{png,jpg,bmp}`` with mixed formats and extension case."""
    extensions = (".png", ".JPG", ".bmp", ".jpeg")
    for c, name in enumerate(sorted(classes)):
        for i in range(per_class):
            save_image(
                root / name / f"img{i}{extensions[i % len(extensions)]}", pixel_value(c, i), size
            )
    return Fake(root, {"all": sorted(classes)}, per_class)


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut a file to a fraction of its length."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
