"""CUB-200-2011 (Wah et al., 2011) split by class into 100/50/50, as in the FREE/PURER code.

With classes numbered 0..199 in ``classes.txt`` order, class ``i`` goes to meta-train when
``i % 2 == 0`` (100 classes), to meta-val when ``i % 4 == 1`` (50) and to meta-test when
``i % 4 == 3`` (50). With ``crop_to_bbox=True`` each image is first cropped to its box in
``bounding_boxes.txt`` (off by default, as in the FREE/PURER code).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from free_common.data.base import ClassImages
from free_common.data.image_io import Box, check_request
from free_common.data.layout import Layout

LAYOUT = Layout(
    "cub",
    """<root>/                      (or <root> = the CUB_200_2011 folder itself)
  CUB_200_2011/
    images.txt                 "<image_id> <class_folder>/<file>.jpg"
    classes.txt                "<class_id> <class_folder>", ids 1..200
    image_class_labels.txt     "<image_id> <class_id>"
    bounding_boxes.txt         "<image_id> <x> <y> <width> <height>"  (only for crop_to_bbox)
    images/
      001.Black_footed_Albatross/
        Black_Footed_Albatross_0001_796111.jpg ...""",
)


def split_of_class(index: int) -> str:
    """Meta-split of the class at 0-based ``index`` in ``classes.txt``."""
    if index % 2 == 0:
        return "train"
    return "val" if index % 4 == 1 else "test"


def load_cub(
    root: str | Path,
    split: str,
    *,
    image_size: int = 84,
    channels: int = 3,
    crop_to_bbox: bool = False,
    workers: int | None = None,
) -> ClassImages:
    """Load one CUB-200-2011 meta-split.

    Args:
        root: folder holding ``CUB_200_2011/``, or that folder itself.
        split: ``"train"``, ``"val"`` or ``"test"``.
        image_size: output side S; images are resized to S x S (aspect ratio not kept).
        channels: 3 (RGB) or 1 (ITU-R 601 luma).
        crop_to_bbox: crop each image to its bounding box before resizing.
        workers: decoding threads; ``None`` picks a default.

    Returns:
        ClassImages named ``cub/<split>``, images (N, channels, S, S), classes in
        ``classes.txt`` order (names without the ``NNN.`` prefix), images in id order.

    Raises:
        DatasetError: missing or malformed files, an undecodable image, a wrong split name.
    """
    given = Path(root)
    LAYOUT.check_split(split)
    check_request(image_size, channels)
    base = given if (given / "images.txt").is_file() else given / "CUB_200_2011"
    LAYOUT.require_dir(base, given)
    classes = _table(base / "classes.txt", given, 2)
    paths = _table(base / "images.txt", given, 2)
    labels = _table(base / "image_class_labels.txt", given, 2)
    class_ids = list(classes)
    chosen = [i for i in range(len(class_ids)) if split_of_class(i) == split]
    position = {class_ids[i]: new for new, i in enumerate(chosen)}
    image_ids = [image for image in paths if _class_of(image, labels, classes, given) in position]
    boxes = _boxes(base / "bounding_boxes.txt", image_ids, given) if crop_to_bbox else None
    files = [base / "images" / paths[image][0] for image in image_ids]
    return ClassImages(
        name=f"cub/{split}",
        images=LAYOUT.decode(given, files, image_size, channels, boxes=boxes, workers=workers),
        labels=np.array([position[labels[image][0]] for image in image_ids], dtype=np.int64),
        class_names=tuple(_display_name(classes[class_ids[i]][0]) for i in chosen),
    )


def _table(path: Path, root: Path, fields: int) -> dict[str, list[str]]:
    """Rows of a whitespace-separated CUB metadata file keyed by their first field."""
    rows: dict[str, list[str]] = {}
    for number, line in enumerate(LAYOUT.read_lines(path, root), start=1):
        cells = line.split()
        if len(cells) != fields or cells[0] in rows:
            problem = "a repeated id" if len(cells) == fields else f"{fields} fields"
            raise LAYOUT.error(f"{path} row {number}: expected {problem}, got {line!r}", root)
        rows[cells[0]] = cells[1:]
    if not rows:
        raise LAYOUT.error(f"{path} is empty", root)
    return rows


def _class_of(
    image: str, labels: dict[str, list[str]], classes: dict[str, list[str]], root: Path
) -> str:
    if image not in labels:
        raise LAYOUT.error(f"image id {image} has no row in image_class_labels.txt", root)
    class_id = labels[image][0]
    if class_id not in classes:
        raise LAYOUT.error(f"image id {image} has class id {class_id} not in classes.txt", root)
    return class_id


def _boxes(path: Path, image_ids: list[str], root: Path) -> list[Box]:
    """(left, top, right, bottom) per image from ``bounding_boxes.txt`` (x, y, width, height)."""
    table = _table(path, root, 5)
    boxes: list[Box] = []
    for image in image_ids:
        if image not in table:
            raise LAYOUT.error(f"image id {image} has no row in {path}", root)
        try:
            x, y, w, h = (float(v) for v in table[image])
        except ValueError as err:
            raise LAYOUT.error(f"{path}: non-numeric box for image id {image}", root) from err
        if w <= 0 or h <= 0:
            raise LAYOUT.error(f"{path}: empty box for image id {image}", root)
        boxes.append((x, y, x + w, y + h))
    return boxes


def _display_name(folder: str) -> str:
    """``"001.Black_footed_Albatross"`` -> ``"Black_footed_Albatross"``."""
    prefix, dot, rest = folder.partition(".")
    return rest if dot and prefix.isdigit() and rest else folder
