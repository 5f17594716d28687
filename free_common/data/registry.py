"""One entry point for every dataset: ``load_split(name, split, root=..., ...)``.

:data:`DATASETS` lists each name with its default image size, channels and the per-channel
mean/std a model spec should normalise with (models normalise; loaders return raw uint8).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from free_common.data.base import SPLITS, ClassImages, DatasetError
from free_common.data.cifar_fs import load_cifar_fs
from free_common.data.cub import load_cub
from free_common.data.fashion_mnist import DEFAULT_ROOT as FASHION_MNIST_ROOT
from free_common.data.fashion_mnist import load_fashion_mnist
from free_common.data.image_folder import load_image_folder
from free_common.data.image_io import prepare_arrays
from free_common.data.mini_imagenet import load_mini_imagenet

_LUMA = (0.299, 0.587, 0.114)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetInfo:
    """Defaults of one dataset.

    Attributes:
        name: registry name.
        image_size: default side S of the returned images.
        channels: default number of channels (1 or 3).
        mean: per-channel mean of pixels scaled to [0, 1], ``channels`` values.
        std: per-channel standard deviation, ``channels`` values.
        splits: meta-splits the dataset provides.
        default_root: where it is found when ``root`` is not given (``None``: must be given,
            or the data are embedded).
    """

    name: str
    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    splits: tuple[str, ...] = SPLITS
    default_root: Path | None = None

    def stats(self, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) for images converted to ``channels``.

        RGB statistics become grey by luma-weighting (the std is then an upper bound);
        grey statistics become RGB by repetition.
        """
        if channels == self.channels:
            return self.mean, self.std
        if channels == 1 and self.channels == 3:
            return (_weighted(self.mean),), (_weighted(self.std),)
        if channels == 3 and self.channels == 1:
            return self.mean * 3, self.std * 3
        raise DatasetError(f"channels must be 1 or 3, got {channels!r}")


def _weighted(values: tuple[float, ...]) -> float:
    return round(sum(w * v for w, v in zip(_LUMA, values, strict=True)), 4)


DATASETS: MappingProxyType[str, DatasetInfo] = MappingProxyType(
    {
        info.name: info
        for info in (
            DatasetInfo("glyphs", 32, 1, (0.5,), (0.5,)),
            DatasetInfo("icons", 32, 3, (0.5552, 0.5612, 0.5548), (0.2318, 0.2148, 0.2345)),
            DatasetInfo("cifar-fs", 32, 3, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
            DatasetInfo("mini-imagenet", 84, 3, (0.4721, 0.4533, 0.4100), (0.2772, 0.2677, 0.2845)),
            DatasetInfo("cub", 84, 3, _IMAGENET_MEAN, _IMAGENET_STD),
            DatasetInfo(
                "fashion-mnist", 28, 1, (0.2860,), (0.3530,), ("test",), FASHION_MNIST_ROOT
            ),
            DatasetInfo("image-folder", 84, 3, _IMAGENET_MEAN, _IMAGENET_STD),
        )
    }
)
"""Every dataset :func:`load_split` knows, by name."""

_Loader = Callable[[Path | None, str, int, int], ClassImages]


def load_split(
    dataset: str,
    split: str,
    *,
    root: str | Path | None = None,
    image_size: int | None = None,
    channels: int | None = None,
) -> ClassImages:
    """Load one meta-split of a registered dataset.

    Args:
        dataset: a key of :data:`DATASETS`.
        split: ``"train"``, ``"val"`` or ``"test"`` (Fashion-MNIST: ``"test"`` only).
        root: dataset folder; required except for ``glyphs`` and ``icons`` (embedded)
            and ``fashion-mnist`` (Debian path by default). For ``image-folder``, a root with
            ``train/ val/ test/`` sub-folders gives one split each; a plain class-folder
            root is a data owner's own data and is its ``"train"`` split only.
        image_size: output side S; ``None`` means the dataset default.
        channels: 1 or 3; ``None`` means the dataset default.

    Returns:
        ClassImages with images (N, channels, S, S).

    Raises:
        DatasetError: unknown dataset, missing root, or any loader error.
    """
    if dataset not in DATASETS:
        raise DatasetError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    info = DATASETS[dataset]
    path = Path(root) if root is not None else info.default_root
    if path is None and dataset not in _EMBEDDED:
        raise DatasetError(f"{dataset}: root=... is required (the folder holding the dataset)")
    size = info.image_size if image_size is None else image_size
    return _LOADERS[dataset](path, split, size, info.channels if channels is None else channels)


_EMBEDDED: dict[str, str] = {"glyphs": "glyph", "icons": "icon"}
"""Datasets shipped inside the package: name -> what one item is called in messages."""


def _embedded(dataset: str) -> _Loader:
    """The loader of an embedded benchmark: ``free_common.data.<dataset>.load_<dataset>``.

    The module is imported on first use, so the registry stays cheap to import.
    """

    def load(root: Path | None, split: str, size: int, channels: int) -> ClassImages:
        if root is not None:
            raise DatasetError(
                f"{dataset}: the {_EMBEDDED[dataset]} benchmark is embedded in the package; "
                "pass no root"
            )
        module = importlib.import_module(f"free_common.data.{dataset}")
        data: ClassImages = getattr(module, f"load_{dataset}")(split)
        images = prepare_arrays(data.images, size, channels)
        return ClassImages(data.name, images, data.labels, data.class_names)

    return load


def _image_folder(root: Path | None, split: str, size: int, channels: int) -> ClassImages:
    root = _required(root)
    if split not in SPLITS:
        raise DatasetError(f"image-folder: unknown split {split!r}; expected one of {SPLITS}")
    if any((root / s).is_dir() for s in SPLITS):
        return load_image_folder(root / split, size, channels)
    if split != "train":
        raise DatasetError(
            f"image-folder: {root} has no train/ val/ test/ sub-folders, so it is one data "
            f"owner's class folders: only split='train' exists, not {split!r}"
        )
    return load_image_folder(root, size, channels)


def _required(root: Path | None) -> Path:
    if root is None:
        raise DatasetError("root=... is required (the folder holding the dataset)")
    return root


_LOADERS: dict[str, _Loader] = {
    "glyphs": _embedded("glyphs"),
    "icons": _embedded("icons"),
    "cifar-fs": lambda r, s, n, c: load_cifar_fs(_required(r), s, image_size=n, channels=c),
    "mini-imagenet": lambda r, s, n, c: load_mini_imagenet(
        _required(r), s, image_size=n, channels=c
    ),
    "cub": lambda r, s, n, c: load_cub(_required(r), s, image_size=n, channels=c),
    "fashion-mnist": lambda r, s, n, c: load_fashion_mnist(r, s, image_size=n, channels=c),
    "image-folder": _image_folder,
}
