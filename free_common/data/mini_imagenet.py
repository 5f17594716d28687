"""miniImageNet (Vinyals et al., 2016) with the Ravi-Larochelle 64/16/20 class split.

The split CSVs ``<root>/{train,val,test}.csv`` (header ``filename,label``) name images in
``<root>/images/``; the label is the ImageNet WordNet id. A copy laid out as class
subfolders, ``<root>/{train,val,test}/<wnid>/*.jpg``, is read too when the CSV is absent.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from free_common.data.base import ClassImages
from free_common.data.image_folder import load_image_folder
from free_common.data.image_io import check_request
from free_common.data.layout import Layout

LAYOUT = Layout(
    "mini-imagenet",
    """<root>/
  images/
    n0153282900000005.jpg ...   (60,000 images, any size; resized on load)
  train.csv  val.csv  test.csv  header "filename,label", e.g. "n0153282900000005.jpg,n01532829"
or, per split, class subfolders instead of a CSV:
  train/<wnid>/*.jpg  val/<wnid>/*.jpg  test/<wnid>/*.jpg""",
)

_HEADER = ["filename", "label"]


def load_mini_imagenet(
    root: str | Path,
    split: str,
    *,
    image_size: int = 84,
    channels: int = 3,
    workers: int | None = None,
) -> ClassImages:
    """Load one miniImageNet meta-split.

    Args:
        root: dataset folder (see :data:`LAYOUT`).
        split: ``"train"``, ``"val"`` or ``"test"``.
        image_size: output side S (84 is the usual size).
        channels: 3 (RGB) or 1 (ITU-R 601 luma).
        workers: decoding threads; ``None`` picks a default.

    Returns:
        ClassImages named ``mini-imagenet/<split>``, images (N, channels, S, S), classes
        (WordNet ids) sorted, each class's images in CSV order.

    Raises:
        DatasetError: missing files, a malformed CSV row, an undecodable image, a wrong split.
    """
    root = Path(root)
    LAYOUT.check_split(split)
    check_request(image_size, channels)
    csv_path = root / f"{split}.csv"
    if not csv_path.is_file() and (root / split).is_dir():
        folder = load_image_folder(root / split, image_size, channels, workers=workers)
        return ClassImages(
            f"mini-imagenet/{split}", folder.images, folder.labels, folder.class_names
        )
    LAYOUT.require_file(csv_path, root)
    rows = _read_csv(csv_path, root)
    images_dir = LAYOUT.require_dir(root / "images", root)
    classes = sorted({label for _, label in rows})
    index = {name: i for i, name in enumerate(classes)}
    ordered = sorted(rows, key=lambda row: index[row[1]])
    _check_present(images_dir, [name for name, _ in ordered], root)
    paths = [images_dir / name for name, _ in ordered]
    return ClassImages(
        name=f"mini-imagenet/{split}",
        images=LAYOUT.decode(root, paths, image_size, channels, workers=workers),
        labels=np.array([index[label] for _, label in ordered], dtype=np.int64),
        class_names=tuple(classes),
    )


def _read_csv(path: Path, root: Path) -> list[tuple[str, str]]:
    """(filename, label) rows of a split CSV, checked for shape and duplicates."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            lines = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise LAYOUT.error(f"cannot read {path}: {err}", root) from err
    if not lines or [cell.strip() for cell in lines[0]] != _HEADER:
        raise LAYOUT.error(f"{path}: first line must be the header 'filename,label'", root)
    rows: list[tuple[str, str]] = []
    for number, cells in enumerate(lines[1:], start=2):
        if not cells:
            continue
        if len(cells) != 2 or not cells[0].strip() or not cells[1].strip():
            raise LAYOUT.error(
                f"{path} line {number}: expected 'filename,label', got {cells}", root
            )
        name = cells[0].strip()
        if "/" in name or "\\" in name or name.startswith("."):
            raise LAYOUT.error(f"{path} line {number}: {name!r} is not a plain file name", root)
        rows.append((name, cells[1].strip()))
    if not rows:
        raise LAYOUT.error(f"{path} lists no images", root)
    if len({name for name, _ in rows}) != len(rows):
        raise LAYOUT.error(f"{path} lists an image twice", root)
    return rows


def _check_present(images_dir: Path, names: list[str], root: Path) -> None:
    """Raise naming the first few CSV entries with no file in ``images/``."""
    present = {entry.name for entry in images_dir.iterdir()}
    missing = [name for name in names if name not in present]
    if missing:
        raise LAYOUT.error(
            f"{len(missing)} images listed in the CSV are missing from {images_dir}: {missing[:5]}",
            root,
        )
