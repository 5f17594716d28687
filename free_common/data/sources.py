"""Data named in the run configuration: a registered dataset, a folder of class folders, or none.

The run-config keys ``data.train`` (what simulated owners partition), ``data.val`` and
``data.test`` (the server's meta-val and meta-test sets) each hold one source:

- ``"none"``: no data.
- ``"<dataset>"``: a dataset of :data:`free_common.data.registry.DATASETS` that needs no
  path: the embedded benchmarks (``glyphs``, ``icons``) and ``fashion-mnist`` at its Debian
  location. Its ``train``, ``val`` or ``test`` meta-split is used.
- ``"<dataset>:<root>"``: a registered dataset under an absolute ``root``
  (``cifar-fs:/data/cifar-fs``; ``image-folder:/data/mine`` with ``train/ val/ test/``).
- ``"folder:<path>"``: every class folder under the absolute ``path`` (one sub-folder of
  images per class), whatever the split: a data owner's or a held-out set of one's own
  classes.
- ``"<source>+<source>+..."``: several domains in one run (``glyphs+icons``). As
  ``data.train``, simulated owners are dealt to the domains in turn (owner i holds classes
  of domain ``i mod n``, at that domain's own channels). As ``data.val`` or ``data.test``,
  the union of the domains' classes, each class named ``<source>/<class>``. A text that
  parses as one source is one source, so a folder whose path holds ``+`` stays one folder.

Paths must be absolute: a Flower app does not run in the directory of the shell that
started it. Embedded benchmarks are read from ``data.assets-dir`` when it is set, because
``flwr run`` ships the app without their ``.npz`` archives.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from free_common.data.base import ClassImages, DatasetError
from free_common.data.image_folder import load_image_folder
from free_common.data.image_io import prepare_arrays
from free_common.data.registry import DATASETS, load_split

__all__ = ["ASSETS_DIR", "EMBEDDED", "FOLDER", "MIX", "NONE", "DataSource", "union"]

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
"""The package's own folder of embedded archives (what run scripts pass as data.assets-dir)."""

NONE = "none"
FOLDER = "folder"
MIX = "mix"
"""The ``dataset`` of a source made of several domains (``parts``)."""
EMBEDDED: tuple[str, ...] = ("glyphs", "icons")
"""Registry datasets shipped inside the package as ``free_common/data/assets/<name>-v1.npz``."""

_FOLDER_CHANNELS = 3


@dataclass(frozen=True)
class DataSource:
    """One parsed source (see the module docstring for the syntax).

    Attributes:
        dataset: a registry name, ``"folder"``, ``"none"`` or ``"mix"``.
        root: the absolute path given after the colon ("" when none was given).
        parts: the domains of a ``"mix"``, in the order written (empty otherwise).
    """

    dataset: str
    root: str = ""
    parts: tuple[DataSource, ...] = ()

    @classmethod
    def parse(cls, text: str, *, key: str = "data source") -> DataSource:
        """Parse ``text``; ``key`` names the run-config key in error messages.

        Raises:
            DatasetError: an unknown dataset, a missing or relative path, a path given to
                a dataset that takes none, or a mix with an empty, ``none`` or repeated part.
        """
        try:
            return cls._parse_one(text, key)
        except DatasetError:
            if "+" not in text:
                raise
        parts = tuple(cls._parse_one(part, f"{key} = {text!r}, part") for part in text.split("+"))
        if any(p.is_none for p in parts):
            raise DatasetError(f"{key} = {text!r}: 'none' cannot be part of a mix")
        if len({str(p) for p in parts}) != len(parts):
            raise DatasetError(f"{key} = {text!r}: a mix names each source once")
        return cls(MIX, "", parts)

    @classmethod
    def _parse_one(cls, text: str, key: str) -> DataSource:
        """One source (no ``+``-mix)."""
        if not text.strip():
            raise DatasetError(f"{key} = {text!r}: empty source")
        name, colon, root = text.strip().partition(":")
        name, root = name.strip(), root.strip()
        known = ", ".join((NONE, FOLDER, *DATASETS))
        if name not in (NONE, FOLDER, *DATASETS):
            raise DatasetError(
                f"{key} = {text!r}: unknown dataset {name!r}; expected one of {known}"
            )
        if colon and not root:
            raise DatasetError(f"{key} = {text!r}: empty path after {name!r}:")
        if name == NONE and colon:
            raise DatasetError(f"{key} = {text!r}: 'none' takes no path")
        if name in EMBEDDED and root:
            raise DatasetError(
                f"{key} = {text!r}: {name} is embedded in the package and takes no path "
                "(set data.assets-dir to read it from another folder)"
            )
        if name == FOLDER and not root:
            raise DatasetError(f"{key} = {text!r}: write folder:<absolute path of the folder>")
        if root and not Path(root).is_absolute():
            raise DatasetError(
                f"{key} = {text!r}: the path must be absolute (a Flower app does not run in "
                "the directory of the shell that started it)"
            )
        return cls(name, root)

    def __str__(self) -> str:
        if self.parts:
            return "+".join(str(p) for p in self.parts)
        return f"{self.dataset}:{self.root}" if self.root else self.dataset

    @property
    def is_none(self) -> bool:
        """Whether this source names no data."""
        return self.dataset == NONE

    def native_channels(self) -> int | None:
        """Channels of the data as stored (a folder counts as RGB); None for ``none``.

        A mix is RGB when any of its parts is.
        """
        if self.is_none:
            return None
        if self.parts:
            return max(p.native_channels() or 1 for p in self.parts)
        return _FOLDER_CHANNELS if self.dataset == FOLDER else DATASETS[self.dataset].channels

    def load(
        self, split: str, *, image_size: int, channels: int, assets_dir: str = ""
    ) -> ClassImages | None:
        """The images of ``split`` at ``channels`` x ``image_size`` x ``image_size``.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"`` (ignored by ``folder:``).
            image_size: output side S (bilinear resize).
            channels: 1 or 3 (luma or repetition).
            assets_dir: folder of the embedded archives ("" = the package's own).

        Returns:
            ClassImages (N, channels, S, S), or None for ``none``; a mix gives the union
            of its parts (:func:`union`).

        Raises:
            DatasetError: a missing path, an empty class folder, an unreadable image, or
                any other loader error, prefixed with this source.
        """
        if self.parts:
            loaded = [
                p.load(split, image_size=image_size, channels=channels, assets_dir=assets_dir)
                for p in self.parts
            ]
            return union([d for d in loaded if d is not None], [str(p) for p in self.parts])
        try:
            if self.is_none:
                return None
            if self.dataset == FOLDER:
                return load_image_folder(self.root, image_size, channels)
            if self.dataset in EMBEDDED and assets_dir:
                return _embedded_from(assets_dir, self.dataset, split, image_size, channels)
            return load_split(
                self.dataset,
                split,
                root=self.root or None,
                image_size=image_size,
                channels=channels,
            )
        except DatasetError as err:
            raise DatasetError(f"{self} ({split}): {err}") from err


def union(sets: list[ClassImages], prefixes: list[str]) -> ClassImages:
    """The classes of every set in one: labels offset in order, names ``<prefix>/<class>``.

    Each class keeps its prefix as its domain (``ClassImages.domains``).

    Args:
        sets: class images of the same shape (C, S, S) each.
        prefixes: one name per set (the source it came from).

    Raises:
        DatasetError: no sets, a prefix count that does not match, or differing shapes.
    """
    if not sets or len(sets) != len(prefixes):
        raise DatasetError(f"a union needs one prefix per set, got {len(sets)} and {len(prefixes)}")
    shapes = {d.image_shape for d in sets}
    if len(shapes) != 1:
        raise DatasetError(f"cannot join sets of different image shapes: {sorted(shapes)}")
    offsets = np.cumsum([0] + [d.num_classes for d in sets[:-1]])
    return ClassImages(
        "+".join(prefixes),
        np.concatenate([d.images for d in sets]),
        np.concatenate([d.labels + o for d, o in zip(sets, offsets, strict=True)]),
        tuple(f"{p}/{n}" for d, p in zip(sets, prefixes, strict=True) for n in d.class_names),
        tuple(p for d, p in zip(sets, prefixes, strict=True) for _ in d.class_names),
    )


def _embedded_from(
    assets_dir: str, dataset: str, split: str, image_size: int, channels: int
) -> ClassImages:
    """``free_common.data.<dataset>.load_<dataset>`` on its archive in ``assets_dir``."""
    folder = Path(assets_dir)
    if not folder.is_absolute():
        raise DatasetError(f"data.assets-dir {assets_dir!r} must be an absolute path")
    if not folder.is_dir():
        raise DatasetError(f"data.assets-dir {assets_dir} is not a folder")
    module = importlib.import_module(f"free_common.data.{dataset}")
    archive = folder / Path(module.NPZ_PATH).name
    data: ClassImages = getattr(module, f"load_{dataset}")(split, archive)
    images = prepare_arrays(data.images, image_size, channels)
    return ClassImages(data.name, images, data.labels, data.class_names)
