import gzip

import numpy as np
import pytest

from free_common.data.base import DatasetError
from free_common.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist
from tests.unit.data.fake_datasets import idx_bytes, pixel_value, truncate, write_fashion_mnist


@pytest.mark.parametrize("gz", [True, False])
def test_test_split_has_all_ten_classes_from_both_files(tmp_path, gz) -> None:
    write_fashion_mnist(tmp_path, gz=gz)
    data = load_fashion_mnist(tmp_path, "test")
    assert data.name == "fashion-mnist/test"
    assert data.images.shape == (40, 1, 28, 28)
    assert data.class_names == CLASS_NAMES and data.class_names[0] == "T-shirt/top"
    assert np.bincount(data.labels).tolist() == [4] * 10
    for c, rows in enumerate(data.indices_by_class()):
        assert [int(data.images[r, 0, 0, 0]) for r in rows] == [pixel_value(c, i) for i in range(4)]


def test_resize_and_rgb(tmp_path) -> None:
    write_fashion_mnist(tmp_path)
    data = load_fashion_mnist(tmp_path, image_size=32, channels=3)
    assert data.images.shape == (40, 3, 32, 32)
    assert (data.images[0] == pixel_value(0, 0)).all()


@pytest.mark.parametrize("split", ["train", "val"])
def test_other_splits_explain_why(tmp_path, split) -> None:
    write_fashion_mnist(tmp_path)
    with pytest.raises(DatasetError, match="only 10 classes"):
        load_fashion_mnist(tmp_path, split)
    with pytest.raises(DatasetError, match="unknown split"):
        load_fashion_mnist(tmp_path, "tst")


def test_missing_files(tmp_path) -> None:
    with pytest.raises(DatasetError, match="expected layout") as err:
        load_fashion_mnist(tmp_path / "absent")
    assert "t10k-images-idx3-ubyte.gz" in str(err.value)
    write_fashion_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="missing file .*t10k-labels-idx1-ubyte"):
        load_fashion_mnist(tmp_path)


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_files(tmp_path, gz) -> None:
    write_fashion_mnist(tmp_path, gz=gz)
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    truncate(tmp_path / name, 0.6)
    with pytest.raises(DatasetError, match="truncated"):
        load_fashion_mnist(tmp_path)


def test_bad_magic_and_mismatched_counts(tmp_path) -> None:
    write_fashion_mnist(tmp_path, gz=False)
    labels = tmp_path / "train-labels-idx1-ubyte"
    good = labels.read_bytes()
    labels.write_bytes(b"\x00\x00\x0d\x01" + good[4:])  # float32 type code
    with pytest.raises(DatasetError, match="expected 00000801"):
        load_fashion_mnist(tmp_path)
    labels.write_bytes(idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(DatasetError, match="disagree"):
        load_fashion_mnist(tmp_path)
    labels.write_bytes(idx_bytes(np.full(30, 10, np.uint8)))
    with pytest.raises(DatasetError, match="labels outside"):
        load_fashion_mnist(tmp_path)


def test_gzip_with_garbage_is_an_error(tmp_path) -> None:
    write_fashion_mnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x03")[:10] + b"garbage")
    with pytest.raises(DatasetError, match="corrupt"):
        load_fashion_mnist(tmp_path)
