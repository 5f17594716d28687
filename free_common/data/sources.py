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

Paths must be absolute: a Flower app does not run in the directory of the shell that
started it. Embedded benchmarks are read from ``data.assets-dir`` when it is set, because
``flwr run`` ships the app without their ``.npz`` archives.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from free_common.data.base import ClassImages, DatasetError
from free_common.data.image_folder import load_image_folder
from free_common.data.image_io import prepare_arrays
from free_common.data.registry import DATASETS, load_split

__all__ = ["ASSETS_DIR", "EMBEDDED", "FOLDER", "NONE", "DataSource"]

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
"""The package's own folder of embedded archives (what run scripts pass as data.assets-dir)."""

NONE = "none"
FOLDER = "folder"
EMBEDDED: tuple[str, ...] = ("glyphs", "icons")
"""Registry datasets shipped inside the package as ``free_common/data/assets/<name>-v1.npz``."""

_FOLDER_CHANNELS = 3


@dataclass(frozen=True)
class DataSource:
    """One parsed source (see the module docstring for the syntax).

    Attributes:
        dataset: a registry name, ``"folder"`` or ``"none"``.
        root: the absolute path given after the colon ("" when none was given).
    """

    dataset: str
    root: str = ""

    @classmethod
    def parse(cls, text: str, *, key: str = "data source") -> DataSource:
        """Parse ``text``; ``key`` names the run-config key in error messages.

        Raises:
            DatasetError: an unknown dataset, a missing or relative path, or a path given to
                a dataset that takes none.
        """
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
        return f"{self.dataset}:{self.root}" if self.root else self.dataset

    @property
    def is_none(self) -> bool:
        """Whether this source names no data."""
        return self.dataset == NONE

    def native_channels(self) -> int | None:
        """Channels of the data as stored (a folder counts as RGB); None for ``none``."""
        if self.is_none:
            return None
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
            ClassImages (N, channels, S, S), or None for ``none``.

        Raises:
            DatasetError: a missing path, an empty class folder, an unreadable image, or
                any other loader error, prefixed with this source.
        """
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
