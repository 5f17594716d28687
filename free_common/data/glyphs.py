"""The embedded glyph benchmark: letters of 25 alphabets typeset in many font designs.

The rendered images ship inside the package (``assets/glyphs-v1.npz``, with the manifest
``assets/glyphs-v1.json``), so loading needs no fonts and no network. Images are uint8,
(N, 1, 32, 32), **white ink on black** (background 0, full ink 255), 20 per class; the
meta-splits are disjoint by alphabet. ``scripts/datasets/render_glyphs.py`` re-renders the data
from Debian's font packages.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from free_common.data.base import ClassImages, DatasetError, check_split_name

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
NPZ_PATH = ASSETS_DIR / "glyphs-v1.npz"
MANIFEST_PATH = ASSETS_DIR / "glyphs-v1.json"


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
        manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DatasetError(f"glyph manifest {manifest_path} unreadable: {error}") from error
    return manifest


def glyph_manifest(path: Path | str | None = None) -> dict[str, Any]:
    """The manifest of the glyph data: fonts, alphabets, split, render parameters.

    Args:
        path: an npz archive whose manifest sits beside it; None for the shipped copy.

    Returns:
        A fresh copy of the parsed manifest (``glyphs-v1.json``).
    """
    copy: dict[str, Any] = json.loads(json.dumps(_read_manifest(_paths(path)[1])))
    return copy


def npz_sha256(path: Path | str | None = None) -> str:
    """Hex SHA-256 of the npz archive (the shipped one by default)."""
    npz = _paths(path)[0]
    try:
        return hashlib.sha256(npz.read_bytes()).hexdigest()
    except OSError as error:
        raise DatasetError(f"glyph data {npz} unreadable: {error}") from error


def load_glyphs(split: str, path: Path | str | None = None) -> ClassImages:
    """Load one meta-split of the glyph benchmark.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        path: an npz archive written by ``scripts/datasets/render_glyphs.py`` (its manifest beside
            it, same name with ``.json``); None or "" for the copy shipped in the package.

    Returns:
        ClassImages named ``glyphs/<split>`` with images uint8 (N, 1, 32, 32), ink high,
        labels int64 (N,) grouped by class (20 consecutive images per class), and class
        names ``"<alphabet>/U+XXXX"``.

    Raises:
        DatasetError: for an unknown split, or missing or inconsistent data files.
    """
    check_split_name(split)
    npz_path, manifest_path = _paths(path)
    manifest = _read_manifest(manifest_path)
    try:
        with np.load(npz_path, allow_pickle=False) as archive:
            images = archive[split]
    except (OSError, KeyError, ValueError) as error:
        raise DatasetError(f"glyph data {npz_path} unreadable for {split!r}: {error}") from error
    try:
        names = tuple(manifest["splits"][split]["classes"])
        size, per_class = int(manifest["image_size"]), int(manifest["images_per_class"])
    except (KeyError, TypeError, ValueError) as error:
        raise DatasetError(f"glyph manifest {manifest_path} lacks {error}") from error
    if images.dtype != np.uint8 or images.shape != (len(names), per_class, size, size):
        raise DatasetError(
            f"glyph split {split!r}: array {images.dtype}{images.shape} does not match the "
            f"manifest ({len(names)} classes x {per_class} images of {size}x{size})"
        )
    labels = np.repeat(np.arange(len(names), dtype=np.int64), per_class)
    return ClassImages(
        name=f"glyphs/{split}",
        images=images.reshape(-1, 1, size, size),
        labels=labels,
        class_names=names,
    )
