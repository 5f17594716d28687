"""CIFAR-FS (Bertinetto et al., ICLR 2019): CIFAR-100 split by class into 64/16/20.

Reads the CIFAR-100 python version (three pickles, loaded with a restricted unpickler that
runs no code from the file, see :mod:`free_common.data.safe_pickle`). Each class takes all
its 600 images, from both the ``train`` and the ``test`` pickle. The class split comes from
``<root>/splits/bertinetto/{train,val,test}.txt`` (or ``split_dir``), one CIFAR-100 fine
label name per line; without split files the standard split, built in below, is used.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from free_common.data.base import SPLITS, ClassImages
from free_common.data.image_io import check_request, prepare_arrays
from free_common.data.layout import Layout
from free_common.data.safe_pickle import safe_loads

logger = logging.getLogger(__name__)

LAYOUT = Layout(
    "cifar-fs",
    """<root>/
  cifar-100-python/
    train   pickle {b"data": uint8 (50000, 3072), b"fine_labels": [int, ...]}
    test    pickle {b"data": uint8 (10000, 3072), b"fine_labels": [int, ...]}
    meta    pickle {b"fine_label_names": [100 names]}
  splits/bertinetto/   optional (or split_dir=...; the standard split is built in)
    train.txt  val.txt  test.txt   64/16/20 class names, one per line""",
)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# The standard CIFAR-FS class split of Bertinetto et al. (2019), as published with their
# code; class names are CIFAR-100 fine labels.
STANDARD_SPLIT: dict[str, tuple[str, ...]] = {
    "train": _words(
        """dolphin seal aquarium_fish ray trout orchid sunflower tulip bottle bowl can cup plate
        apple mushroom orange pear clock keyboard chair couch bee caterpillar cockroach bear
        lion tiger wolf bridge castle house road skyscraper cloud forest mountain elephant
        kangaroo porcupine possum raccoon skunk lobster spider boy girl dinosaur lizard snake
        turtle hamster mouse rabbit shrew squirrel oak_tree palm_tree pine_tree willow_tree
        bus train lawn_mower streetcar tank"""
    ),
    "val": _words(
        """beaver otter flatfish shark lamp television beetle butterfly sea camel cattle crab
        crocodile maple_tree motorcycle tractor"""
    ),
    "test": _words(
        """whale poppy rose sweet_pepper telephone bed table wardrobe leopard plain chimpanzee
        fox snail worm baby man woman bicycle pickup_truck rocket"""
    ),
}

_SIDE = 32


def load_cifar_fs(
    root: str | Path,
    split: str,
    *,
    image_size: int = 32,
    channels: int = 3,
    split_dir: str | Path | None = None,
    workers: int | None = None,
) -> ClassImages:
    """Load one CIFAR-FS meta-split.

    Args:
        root: folder holding ``cifar-100-python/`` (see :data:`LAYOUT`).
        split: ``"train"``, ``"val"`` or ``"test"``.
        image_size: output side S (32 is the native size; others are resized bilinearly).
        channels: 3 (RGB) or 1 (ITU-R 601 luma).
        split_dir: folder with ``{train,val,test}.txt``; default ``<root>/splits/bertinetto``
            when present, else the built-in standard split.
        workers: resize threads; ``None`` picks a default.

    Returns:
        ClassImages named ``cifar-fs/<split>`` with images (N, channels, S, S), classes in
        split-file order, each class's images in pickle order (``train`` then ``test``).

    Raises:
        DatasetError: missing or corrupt files, unknown class names, a wrong split name.
    """
    root = Path(root)
    LAYOUT.check_split(split)
    check_request(image_size, channels)
    base = LAYOUT.require_dir(root / "cifar-100-python", root)
    names = _label_names(base / "meta", root)
    classes = _split_classes(root, split, split_dir, names)
    batches = [_batch(base / part, root, len(names)) for part in ("train", "test")]
    data = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    index = {name: i for i, name in enumerate(names)}
    rows, new_labels = _select(labels, [index[c] for c in classes], classes, root)
    images = data[rows].reshape(-1, 3, _SIDE, _SIDE)
    return ClassImages(
        name=f"cifar-fs/{split}",
        images=prepare_arrays(images, image_size, channels, workers=workers),
        labels=new_labels,
        class_names=tuple(classes),
    )


def _select(
    labels: npt.NDArray[np.int64], wanted: list[int], classes: list[str], root: Path
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Rows of the wanted classes grouped by class, and their new labels 0..len(wanted)-1."""
    rows, new = [], []
    for i, (label, name) in enumerate(zip(wanted, classes, strict=True)):
        found = np.flatnonzero(labels == label)
        if found.size == 0:
            raise LAYOUT.error(f"class {name!r} has no images in the train/test pickles", root)
        rows.append(found)
        new.append(np.full(found.size, i, dtype=np.int64))
    return np.concatenate(rows).astype(np.int64), np.concatenate(new)


def _unpickle(path: Path, root: Path) -> dict[str, Any]:
    """A CIFAR pickle as a dict with ``str`` keys."""
    LAYOUT.require_file(path, root)
    try:
        value = safe_loads(path.read_bytes())
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as err:
        raise LAYOUT.error(f"truncated, corrupt or unsafe pickle {path}: {err}", root) from err
    except OSError as err:
        raise LAYOUT.error(f"cannot read {path}: {err}", root) from err
    if not isinstance(value, dict):
        raise LAYOUT.error(f"{path} holds a {type(value).__name__}, expected a dict", root)
    return {k.decode("latin-1") if isinstance(k, bytes) else str(k): v for k, v in value.items()}


def _label_names(path: Path, root: Path) -> list[str]:
    names = _unpickle(path, root).get("fine_label_names")
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise LAYOUT.error(f"{path} lacks a list b'fine_label_names'", root)
    decoded = [n.decode("latin-1") if isinstance(n, bytes) else n for n in names]
    if len(set(decoded)) != len(decoded):
        raise LAYOUT.error(f"{path}: duplicate fine label names", root)
    return decoded


def _batch(
    path: Path, root: Path, num_labels: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Pixels (N, 3072) and fine labels (N,) of one CIFAR-100 pickle."""
    batch = _unpickle(path, root)
    data, labels = batch.get("data"), batch.get("fine_labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise LAYOUT.error(f"{path}: b'data' must be a uint8 array (N, 3072)", root)
    if data.shape[1] != 3 * _SIDE * _SIDE:
        raise LAYOUT.error(f"{path}: b'data' has shape {data.shape}, expected (N, 3072)", root)
    if not isinstance(labels, list) or len(labels) != data.shape[0]:
        raise LAYOUT.error(f"{path}: b'fine_labels' must list one int per row of b'data'", root)
    if not all(type(label) is int and 0 <= label < num_labels for label in labels):
        raise LAYOUT.error(f"{path}: fine labels must be ints in 0..{num_labels - 1}", root)
    return data, np.array(labels, dtype=np.int64)


def _split_classes(
    root: Path, split: str, split_dir: str | Path | None, names: list[str]
) -> list[str]:
    """Class names of ``split``, checked against CIFAR-100 and the other split files."""
    folder = Path(split_dir) if split_dir is not None else root / "splits" / "bertinetto"
    if split_dir is None and not folder.is_dir():
        logger.info("no split files under %s: using the built-in standard CIFAR-FS split", folder)
        splits = {s: list(STANDARD_SPLIT[s]) for s in SPLITS}
    else:
        LAYOUT.require_dir(folder, root)
        splits = {split: LAYOUT.read_lines(folder / f"{split}.txt", root)}
        for other in SPLITS:
            if other != split and (folder / f"{other}.txt").is_file():
                splits[other] = LAYOUT.read_lines(folder / f"{other}.txt", root)
    known = set(names)
    classes = splits[split]
    unknown = [c for c in classes if c not in known]
    if unknown:
        raise LAYOUT.error(f"{split}.txt names classes not in CIFAR-100: {unknown[:5]}", root)
    if len(set(classes)) != len(classes):
        raise LAYOUT.error(f"{split}.txt lists a class twice", root)
    for other, other_classes in splits.items():
        shared = sorted(set(classes) & set(other_classes)) if other != split else []
        if shared:
            raise LAYOUT.error(f"classes in both {split} and {other} splits: {shared[:5]}", root)
    return classes
