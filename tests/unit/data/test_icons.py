from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from free_common.data import icons
from free_common.data.base import SPLITS, ClassImages, DatasetError
from free_common.data.episodes import EpisodeSampler
from free_common.data.icons import icon_manifest, load_icons, npz_sha256
from free_common.data.registry import DATASETS, load_split

SHA256 = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture(scope="module")
def splits() -> dict[str, ClassImages]:
    return {split: load_icons(split) for split in SPLITS}


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A private copy of the shipped npz and manifest, free to damage."""
    for source in (icons.NPZ_PATH, icons.MANIFEST_PATH):
        shutil.copy(source, tmp_path / source.name)
    icons._read_manifest.cache_clear()
    return tmp_path / icons.NPZ_PATH.name


def test_shapes_dtype_and_labels(splits: dict[str, ClassImages]) -> None:
    for split, data in splits.items():
        assert data.name == f"icons/{split}"
        assert data.images.dtype == np.uint8
        assert data.image_shape == (3, 32, 32)
        assert data.labels.dtype == np.int64
        counts = np.bincount(data.labels, minlength=data.num_classes)
        assert counts.min() >= 10
        assert np.all(np.diff(data.labels) >= 0)  # each class's images are consecutive


def test_colour_on_mid_grey(splits: dict[str, ClassImages]) -> None:
    images = splits["test"].images
    corners = images[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert np.mean(corners == 128) > 0.8  # the background shows in most corners
    spread = images.astype(np.int16).max(axis=1) - images.astype(np.int16).min(axis=1)
    assert spread.mean() > 10  # RGB, not grey copied thrice
    assert icon_manifest()["pixels"]["background"].startswith("icons composited on mid-grey")


def test_size_proportions_and_disjoint_splits(splits: dict[str, ClassImages]) -> None:
    counts = {s: d.num_classes for s, d in splits.items()}
    total = sum(counts.values())
    assert total >= 250
    names = {s: set(d.class_names) for s, d in splits.items()}
    assert len(set().union(*names.values())) == total
    for split, target in zip(SPLITS, (0.64, 0.16, 0.20), strict=True):
        assert abs(counts[split] / total - target) < 0.01, counts


def test_manifest_matches_data(splits: dict[str, ClassImages]) -> None:
    manifest = icon_manifest()
    assert npz_sha256() == manifest["npz"]["sha256"]
    classes = {c["name"]: c for c in manifest["classes"]}
    for split, data in splits.items():
        assert list(data.class_names) == manifest["splits"][split]["classes"]
        for name, count in zip(data.class_names, np.bincount(data.labels), strict=True):
            assert classes[name]["split"] == split
            assert len(classes[name]["images"]) == count


def test_manifest_names_every_source(splits: dict[str, ClassImages]) -> None:
    manifest = icon_manifest()
    themes = {t["directory"]: t for t in manifest["themes"]}
    packages = manifest["packages"]
    assert {t["package"] for t in themes.values()} | {"librsvg2-bin"} == set(packages)
    for name, package in packages.items():
        assert package["version"], name
        assert SHA256.match(package["deb_sha256"]), name
        assert SHA256.match(package["copyright_sha256"]), name
        assert package["copyright_file"] == f"/usr/share/doc/{name}/copyright"
    assert all(t["licence"] for t in themes.values())  # pinned: not every file is DEP-5
    for entry in manifest["classes"]:
        assert len(entry["images"]) >= 10, entry["name"]
        used = [theme for theme, *_ in entry["images"]]
        assert len(used) == len(set(used)), entry["name"]  # one image per theme
        for theme, icon_name, path, digest in entry["images"]:
            assert theme in themes and path.startswith(f"{theme}/")
            assert Path(path).stem == icon_name
            assert SHA256.match(digest)
            assert not icon_name.endswith("-symbolic")


def test_manifest_is_a_copy() -> None:
    icon_manifest()["name"] = "changed"
    assert icon_manifest()["name"] == "icons-v1"


def test_loads_fast() -> None:
    icons._read_manifest.cache_clear()
    start = time.perf_counter()
    for split in SPLITS:
        load_icons(split)
    assert time.perf_counter() - start < 2.0


def test_empty_path_means_the_shipped_copy(copy: Path) -> None:
    assert np.array_equal(load_icons("val", "").labels, load_icons("val").labels)
    assert np.array_equal(load_icons("val", copy).images, load_icons("val").images)


def test_bad_split_name() -> None:
    with pytest.raises(DatasetError, match="unknown split"):
        load_icons("training")


def test_missing_files(copy: Path) -> None:
    with pytest.raises(DatasetError, match="manifest .* unreadable"):
        load_icons("val", path=copy.parent / "absent.npz")
    copy.unlink()
    with pytest.raises(DatasetError, match="unreadable for 'val'"):
        load_icons("val", path=copy)


def test_truncated_npz(copy: Path) -> None:
    data = copy.read_bytes()
    copy.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="unreadable for 'test'"):
        load_icons("test", path=copy)


def test_corrupt_manifest(copy: Path) -> None:
    manifest_path = copy.with_suffix(".json")
    manifest_path.write_text("{ not json")
    with pytest.raises(DatasetError, match="manifest .* unreadable"):
        load_icons("train", path=copy)


def test_manifest_without_splits(copy: Path) -> None:
    manifest_path = copy.with_suffix(".json")
    manifest = json.loads(manifest_path.read_text())
    del manifest["splits"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="lacks 'splits'"):
        load_icons("train", path=copy)


def test_manifest_disagreeing_with_the_array(copy: Path) -> None:
    manifest_path = copy.with_suffix(".json")
    manifest = json.loads(manifest_path.read_text())
    first = next(c for c in manifest["classes"] if c["split"] == "val")
    first["images"].pop()  # the manifest now counts one image fewer than the npz holds
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="does not match the manifest"):
        load_icons("val", path=copy)


def test_labels_disagreeing_with_the_manifest(copy: Path) -> None:
    with np.load(copy) as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays["test_labels"] = arrays["test_labels"][::-1].copy()
    np.savez(copy, **arrays)
    with pytest.raises(DatasetError, match="labels do not match"):
        load_icons("test", path=copy)


def test_registry_dispatch_and_statistics(splits: dict[str, ClassImages]) -> None:
    info = DATASETS["icons"]
    assert (info.image_size, info.channels) == (32, 3)
    pixels = splits["train"].images.astype(np.float64) / 255.0
    assert np.allclose(info.mean, pixels.mean(axis=(0, 2, 3)), atol=2e-3)
    assert np.allclose(info.std, pixels.std(axis=(0, 2, 3)), atol=2e-3)
    grey = load_split("icons", "test", image_size=28, channels=1)
    assert grey.images.shape == (len(splits["test"].images), 1, 28, 28)
    assert grey.class_names == splits["test"].class_names
    with pytest.raises(DatasetError, match="embedded"):
        load_split("icons", "test", root="/tmp")


def test_every_class_serves_five_shot_five_query(splits: dict[str, ClassImages]) -> None:
    sampler = EpisodeSampler(splits["test"], n_way=5, k_shot=5, q_query=5, seed=0)
    assert len(sampler.eligible) == splits["test"].num_classes
    episode = sampler.sample()
    assert episode.support_images.shape == (25, 3, 32, 32)
    assert episode.query_images.shape == (25, 3, 32, 32)
