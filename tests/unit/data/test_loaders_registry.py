import sys
import types

import numpy as np
import pytest

from free_common.data.base import ClassImages, DatasetError
from free_common.data.registry import DATASETS, load_split
from tests.unit.data.fake_datasets import (
    write_cifar_fs,
    write_cub,
    write_fashion_mnist,
    write_image_folder,
    write_mini_imagenet,
)


def test_every_dataset_has_consistent_defaults() -> None:
    assert set(DATASETS) == {
        "glyphs",
        "icons",
        "cifar-fs",
        "mini-imagenet",
        "cub",
        "fashion-mnist",
        "image-folder",
    }
    for name, info in DATASETS.items():
        assert info.name == name and info.channels in (1, 3) and info.image_size > 0
        assert len(info.mean) == len(info.std) == info.channels
        for channels in (1, 3):
            mean, std = info.stats(channels)
            assert len(mean) == len(std) == channels


@pytest.mark.parametrize(
    ("dataset", "writer", "split", "shape"),
    [
        ("cifar-fs", write_cifar_fs, "train", (12, 3, 32, 32)),
        ("mini-imagenet", write_mini_imagenet, "val", (12, 3, 84, 84)),
        ("cub", write_cub, "test", (12, 3, 84, 84)),
        ("fashion-mnist", write_fashion_mnist, "test", (40, 1, 28, 28)),
    ],
)
def test_dispatch_with_defaults(tmp_path, dataset, writer, split, shape) -> None:
    writer(tmp_path / "d")
    data = load_split(dataset, split, root=tmp_path / "d")
    assert data.images.shape == shape
    small = load_split(dataset, split, root=str(tmp_path / "d"), image_size=6, channels=1)
    assert small.images.shape == (shape[0], 1, 6, 6)


def test_image_folder_flat_root_is_train_only(tmp_path) -> None:
    write_image_folder(tmp_path)
    assert load_split("image-folder", "train", root=tmp_path, image_size=8).num_classes == 3
    with pytest.raises(DatasetError, match="only split='train'"):
        load_split("image-folder", "test", root=tmp_path)


def test_image_folder_with_split_subfolders(tmp_path) -> None:
    write_image_folder(tmp_path / "train", classes=("a", "b"))
    write_image_folder(tmp_path / "test", classes=("c", "d", "e"))
    assert load_split("image-folder", "test", root=tmp_path, image_size=8).class_names == (
        "c",
        "d",
        "e",
    )


@pytest.mark.parametrize(("dataset", "channels"), [("glyphs", 1), ("icons", 3)])
def test_embedded_data_are_imported_lazily_and_converted(monkeypatch, dataset, channels) -> None:
    calls = []

    def load(split: str) -> ClassImages:
        calls.append(split)
        images = np.full((2, channels, 32, 32), 7, np.uint8)
        return ClassImages(f"{dataset}/{split}", images, np.array([0, 1]), ("a", "b"))

    fake = types.ModuleType(f"free_common.data.{dataset}")
    setattr(fake, f"load_{dataset}", load)
    monkeypatch.setitem(sys.modules, f"free_common.data.{dataset}", fake)
    data = load_split(dataset, "val", image_size=16, channels=4 - channels)
    assert calls == ["val"] and data.images.shape == (2, 4 - channels, 16, 16)
    assert load_split(dataset, "test").images.shape == (2, channels, 32, 32)
    with pytest.raises(DatasetError, match="embedded"):
        load_split(dataset, "val", root="/tmp")


def test_errors(tmp_path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset 'omniglot'"):
        load_split("omniglot", "train")
    with pytest.raises(DatasetError, match="root=... is required"):
        load_split("cub", "train")
    with pytest.raises(DatasetError, match="expected layout"):
        load_split("fashion-mnist", "test", root=tmp_path / "absent")
