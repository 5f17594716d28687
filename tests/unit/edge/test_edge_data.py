"""Edge-side data helpers: IDX/npz readers, support folders, episodes, intervals."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from client.edge import datasets
from client.edge.images import ImageReadError, load_image, load_support_folder


def _write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_fashion_idx_reader_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 6), ("t10k", 4)):
        _write_idx(
            tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)), 0x803
        )
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 2, 0x801)
    data = datasets.load_fashion_idx(tmp_path)
    assert data.images.shape == (10, 1, 28, 28) and data.labels.tolist()[:6] == [0, 1, 0, 1, 0, 1]


def test_truncated_idx_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x-images-idx3-ubyte"
    path.write_bytes(struct.pack(">IIII", 0x803, 5, 28, 28) + b"\0" * 10)
    with pytest.raises(datasets.DataError, match="truncated"):
        datasets._read_idx(path, 0x803)


def test_glyph_npz_split_layout(tmp_path: Path) -> None:
    path = tmp_path / "g.npz"
    test = np.arange(3 * 4 * 8 * 8, dtype=np.uint8).reshape(3, 4, 8, 8)
    np.savez(path, train=np.zeros((2, 4, 8, 8), np.uint8), test=test)
    data = datasets.load_glyph_split(path, "test")
    assert data.images.shape == (12, 1, 8, 8)
    assert data.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert np.array_equal(data.images[5, 0], test[1, 1])
    with pytest.raises(datasets.DataError, match="no split"):
        datasets.load_glyph_split(path, "val")


def test_episodes_are_reproducible_and_shaped() -> None:
    data = datasets.LabelledImages(
        np.random.default_rng(0).integers(0, 255, (60, 1, 28, 28), dtype=np.uint8),
        np.repeat(np.arange(6), 10).astype(np.int64),
    )
    kwargs = {
        "n_way": 3,
        "k_shot": 2,
        "q_query": 4,
        "episodes": 2,
        "seed": 1,
        "channels": 1,
        "size": 32,
    }
    a, b = (
        list(datasets.sample_episodes(data, **kwargs)),
        list(datasets.sample_episodes(data, **kwargs)),
    )
    assert a[0].support.shape == (6, 1, 32, 32) and a[0].query.shape == (12, 1, 32, 32)
    assert np.array_equal(a[1].query, b[1].query)
    assert a[0].support.min() >= 0.0 and a[0].support.max() <= 1.0


def test_accuracy_ci95() -> None:
    mean, half = datasets.accuracy_ci95([0.5, 1.0])
    assert mean == pytest.approx(0.75)
    assert half == pytest.approx(1.96 * np.std([0.5, 1.0], ddof=1) / np.sqrt(2))


def test_support_folder_reader(tmp_path: Path) -> None:
    for name, value in (("cat", 0), ("dog", 255)):
        (tmp_path / name).mkdir()
        Image.new("RGB", (40, 30), (value, value, value)).save(tmp_path / name / "a.png")
    support = load_support_folder(tmp_path, channels=1, size=32)
    assert support.class_names == ("cat", "dog")
    assert support.images.shape == (2, 1, 32, 32)
    assert support.images[1].min() == pytest.approx(1.0)
    assert load_image(tmp_path / "cat" / "a.png", 3, 16).shape == (3, 16, 16)


def test_unreadable_image_raises(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match="cannot read"):
        load_image(tmp_path / "bad.png", 1, 32)
