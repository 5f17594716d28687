"""A data owner's own images: one folder per class (the torchvision ImageFolder layout).

There is no meta-split: :func:`load_image_folder` returns every class under the root,
sorted by folder name, each class's files sorted by name. Hidden files and folders (a
leading dot) and files with other extensions are skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from free_common.data.base import ClassImages
from free_common.data.image_io import IMAGE_EXTENSIONS, check_request
from free_common.data.layout import Layout

LAYOUT = Layout(
    "image-folder",
    """<root>/
  <class_a>/
    0001.jpg  0002.png ...   (.png .jpg .jpeg .bmp, any size, any case)
  <class_b>/
    ...""",
)


def load_image_folder(
    root: str | Path, image_size: int, channels: int, *, workers: int | None = None
) -> ClassImages:
    """Load every class folder under ``root``.

    Args:
        root: folder with one sub-folder of images per class.
        image_size: output side S; images are resized to S x S (aspect ratio not kept).
        channels: 3 (RGB) or 1 (ITU-R 601 luma); transparency is composited on white.
        workers: decoding threads; ``None`` picks a default.

    Returns:
        ClassImages named ``image-folder/<root name>``, images (N, channels, S, S), classes
        sorted by folder name.

    Raises:
        DatasetError: no class folders, an empty class, or an unreadable image (named).
    """
    root = Path(root)
    check_request(image_size, channels)
    LAYOUT.require_dir(root, root)
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        loose = [p.name for p in root.iterdir() if _is_image(p)]
        hint = f" ({len(loose)} images lie directly in it)" if loose else ""
        raise LAYOUT.error(f"no class folders in {root}{hint}", root)
    files = [sorted(p for p in folder.iterdir() if _is_image(p)) for folder in classes]
    for folder, found in zip(classes, files, strict=True):
        if not found:
            raise LAYOUT.error(f"class folder {folder} holds no images", root)
    paths = [path for found in files for path in found]
    labels = np.concatenate([np.full(len(f), i, dtype=np.int64) for i, f in enumerate(files)])
    return ClassImages(
        name=f"image-folder/{root.name}",
        images=LAYOUT.decode(root, paths, image_size, channels, workers=workers),
        labels=labels,
        class_names=tuple(folder.name for folder in classes),
    )


def _is_image(path: Path) -> bool:
    return (
        path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS
    )
