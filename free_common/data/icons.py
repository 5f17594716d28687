"""The embedded icon benchmark: freedesktop icon concepts drawn by many icon themes.

Real designer-drawn colour images: one class per icon concept (``printer``, ``user-trash``,
``go-home``, ...), one image per distinct theme design. The images ship inside the package
(``assets/icons-v1.npz``, with the manifest ``assets/icons-v1.json``), so loading needs no
icon themes and no network. Images are uint8 RGB, (N, 3, 32, 32), composited on mid-grey
(128); classes hold 10 or more images each, and the meta-splits are disjoint by class.
``python -m scripts.datasets.render_icons`` re-renders the data from Debian's packages.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from free_common.data.base import ClassImages, DatasetError, check_split_name

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
NPZ_PATH = ASSETS_DIR / "icons-v1.npz"
MANIFEST_PATH = ASSETS_DIR / "icons-v1.json"


def _paths(path: Path | str | None) -> tuple[Path, Path]:
    """The npz and its manifest (same name, ``.json``); the shipped copy for None or "".

    The empty string is accepted as "default" because Flower run configs cannot hold None.
    """
    if path is None or path == "":
        return NPZ_PATH, MANIFEST_PATH
    npz = Path(path)
    return npz, npz.with_suffix(".json")


@lru_cache(maxsize=4)
def _read_manifest(manifest_path: Path) -> dict[str, Any]:
    """The parsed manifest at ``manifest_path`` (cached; callers must not mutate it)."""
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DatasetError(f"icon manifest {manifest_path} unreadable: {error}") from error
    if not isinstance(manifest, dict):
        raise DatasetError(f"icon manifest {manifest_path} is not a JSON object")
    return manifest


def icon_manifest(path: Path | str | None = None) -> dict[str, Any]:
    """The manifest of the icon data: packages, themes, classes and their source files.

    Args:
        path: an npz archive whose manifest sits beside it; None for the shipped copy.

    Returns:
        A fresh copy of the parsed manifest (``icons-v1.json``).
    """
    copy: dict[str, Any] = json.loads(json.dumps(_read_manifest(_paths(path)[1])))
    return copy


def npz_sha256(path: Path | str | None = None) -> str:
    """Hex SHA-256 of the npz archive (the shipped one by default)."""
    npz = _paths(path)[0]
    try:
        return hashlib.sha256(npz.read_bytes()).hexdigest()
    except OSError as error:
        raise DatasetError(f"icon data {npz} unreadable: {error}") from error


def _split_layout(
    manifest: dict[str, Any], split: str, where: Path
) -> tuple[tuple[str, ...], list[int], int]:
    """Class names, images per class and image side of ``split``, as the manifest says."""
    try:
        names = tuple(manifest["splits"][split]["classes"])
        counts = {c["name"]: len(c["images"]) for c in manifest["classes"] if c["split"] == split}
        size = int(manifest["image_size"])
        per_class = [counts[name] for name in names]
    except (KeyError, TypeError, ValueError) as error:
        raise DatasetError(f"icon manifest {where} lacks {error}") from error
    return names, per_class, size


def load_icons(split: str, path: Path | str | None = None) -> ClassImages:
    """Load one meta-split of the icon benchmark.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        path: an npz archive written by ``python -m scripts.datasets.render_icons`` (its
            manifest beside it, same name with ``.json``); None or "" for the copy shipped
            in the package.

    Returns:
        ClassImages named ``icons/<split>`` with images uint8 (N, 3, 32, 32) on mid-grey,
        labels int64 (N,) grouped by class (each class's images consecutive, 10 or more),
        and class names that are freedesktop icon names (``"printer"``).

    Raises:
        DatasetError: for an unknown split, or missing, corrupt or inconsistent data files.
    """
    check_split_name(split)
    npz_path, manifest_path = _paths(path)
    manifest = _read_manifest(manifest_path)
    names, per_class, size = _split_layout(manifest, split, manifest_path)
    try:
        with np.load(npz_path, allow_pickle=False) as archive:
            images, labels = archive[split], archive[f"{split}_labels"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DatasetError(f"icon data {npz_path} unreadable for {split!r}: {error}") from error
    total = sum(per_class)
    if images.dtype != np.uint8 or images.shape != (total, 3, size, size):
        raise DatasetError(
            f"icon split {split!r}: array {images.dtype}{images.shape} does not match the "
            f"manifest ({len(names)} classes, {total} images of 3x{size}x{size})"
        )
    expected = np.repeat(np.arange(len(names)), per_class)
    if labels.shape != (total,) or not np.array_equal(labels, expected):
        raise DatasetError(
            f"icon split {split!r}: labels do not match the manifest's images per class"
        )
    return ClassImages(
        name=f"icons/{split}",
        images=images,
        labels=expected.astype(np.int64),
        class_names=names,
    )
