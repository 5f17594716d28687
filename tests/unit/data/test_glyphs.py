from __future__ import annotations

import time

import numpy as np
import pytest

from free_common.data import glyphs
from free_common.data.base import SPLITS, ClassImages, DatasetError
from free_common.data.glyphs import glyph_manifest, load_glyphs, npz_sha256


@pytest.fixture(scope="module")
def splits() -> dict[str, ClassImages]:
    return {split: load_glyphs(split) for split in SPLITS}


def _alphabet(class_name: str) -> str:
    return class_name.split("/")[0]


def test_shapes_dtype_and_labels(splits: dict[str, ClassImages]) -> None:
    for split, data in splits.items():
        assert data.name == f"glyphs/{split}"
        assert data.images.dtype == np.uint8
        assert data.image_shape == (1, 32, 32)
        assert data.labels.dtype == np.int64
        assert np.array_equal(np.bincount(data.labels), np.full(data.num_classes, 20))


def test_ink_is_high_on_black(splits: dict[str, ClassImages]) -> None:
    images = splits["test"].images
    corners = images[:, 0, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert np.mean(corners == 0) > 0.95  # background is 0
    assert (images.reshape(len(images), -1).max(axis=1) >= 128).all()  # every image has ink
    assert 0.05 < images.mean() / 255 < 0.4  # mostly background
    assert glyph_manifest()["pixels"]["ink"] == "high"


def test_splits_disjoint_by_class_and_alphabet(splits: dict[str, ClassImages]) -> None:
    names = {s: set(d.class_names) for s, d in splits.items()}
    alphabets = {s: {_alphabet(n) for n in d.class_names} for s, d in splits.items()}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not names[a] & names[b]
            assert not alphabets[a] & alphabets[b]


def test_size_and_proportions(splits: dict[str, ClassImages]) -> None:
    counts = {s: d.num_classes for s, d in splits.items()}
    total = sum(counts.values())
    assert total >= 600
    assert len({_alphabet(n) for d in splits.values() for n in d.class_names}) >= 20
    for split, target in zip(SPLITS, (0.64, 0.16, 0.20), strict=True):
        assert abs(counts[split] / total - target) < 0.03, counts


def test_manifest_matches_data(splits: dict[str, ClassImages]) -> None:
    manifest = glyph_manifest()
    assert npz_sha256() == manifest["npz"]["sha256"]
    for split, data in splits.items():
        assert list(data.class_names) == manifest["splits"][split]["classes"]
    fonts = manifest["fonts"]
    assert all({"file", "package", "face_index", "sha256"} <= set(f) for f in fonts)
    for alphabet in manifest["alphabets"]:
        assert alphabet["split"] in SPLITS
        assert len(alphabet["kept"]) <= len(alphabet["letters"])
        assert all(0 <= i < len(fonts) for d in alphabet["designs"] for i in d["fonts"])


def test_manifest_is_a_copy() -> None:
    glyph_manifest()["name"] = "changed"
    assert glyph_manifest()["name"] == "glyphs-v1"


def test_bad_split_name() -> None:
    with pytest.raises(DatasetError, match="unknown split"):
        load_glyphs("training")


def test_explicit_path_and_missing_file(tmp_path: object) -> None:
    assert load_glyphs("val", path=glyphs.NPZ_PATH).num_classes == len(
        glyph_manifest()["splits"]["val"]["classes"]
    )
    with pytest.raises(DatasetError):
        load_glyphs("val", path="/nonexistent/glyphs.npz")


def test_loads_fast() -> None:
    glyphs._read_manifest.cache_clear()
    start = time.perf_counter()
    for split in SPLITS:
        load_glyphs(split)
    assert time.perf_counter() - start < 2.0


def test_empty_path_means_the_shipped_copy() -> None:
    # Flower run configs cannot hold None, so "" stands for the packaged archive.
    assert np.array_equal(load_glyphs("val", "").labels, load_glyphs("val").labels)
