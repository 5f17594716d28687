import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from free_common.data.base import SPLITS, DatasetError
from free_common.data.cifar_fs import STANDARD_SPLIT, load_cifar_fs
from free_common.data.safe_pickle import UnsafePickleError, safe_loads
from tests.unit.data.fake_datasets import pixel_value, truncate, write_cifar_fs, write_split_files

# A dict {b"data": uint8 array (2, 3), b"fine_labels": [0, 1]} pickled by Python 2's cPickle
# (protocol 2, str as SHORT_BINSTRING, numpy.core names): the form of the real CIFAR files.
PY2_PICKLE = (
    b"\x80\x02}q\x00(U\x04data"
    b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
    b"(K\x01K\x02K\x03\x86cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R"
    b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    b"\x89U\x06\x00\x01\x02\x03\x04\x05tb"
    b"U\x0bfine_labels]q\x01(K\x00K\x01eu."
)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.mkdir, (str(self.marker),))


def _global_index(fake, split: str, k: int) -> int:
    return SPLITS.index(split) * len(fake.classes[split]) + k


@pytest.mark.parametrize("split", SPLITS)
def test_split_shapes_labels_names_and_pixels(tmp_path, split) -> None:
    fake = write_cifar_fs(tmp_path)
    data = load_cifar_fs(tmp_path, split)
    assert data.name == f"cifar-fs/{split}"
    assert data.images.shape == (12, 3, 32, 32)
    assert data.class_names == tuple(fake.classes[split])
    assert np.bincount(data.labels).tolist() == [4, 4, 4]
    for k, rows in enumerate(data.indices_by_class()):
        values = sorted(int(data.images[r, 0, 0, 0]) for r in rows)
        g = _global_index(fake, split, k)
        # images 0-2 come from the train pickle, image 3 from the test pickle
        assert values == [pixel_value(g, i) for i in range(4)]


def test_splits_are_disjoint(tmp_path) -> None:
    write_cifar_fs(tmp_path)
    names = [set(load_cifar_fs(tmp_path, s).class_names) for s in SPLITS]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])


def test_resize_and_grey(tmp_path) -> None:
    fake = write_cifar_fs(tmp_path)
    data = load_cifar_fs(tmp_path, "val", image_size=8, channels=1)
    assert data.images.shape == (12, 1, 8, 8)
    g = _global_index(fake, "val", 0)
    assert (data.images[0] == pixel_value(g, 0)).all()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickle_protocols(tmp_path, protocol) -> None:
    write_cifar_fs(tmp_path, protocol=protocol)
    assert load_cifar_fs(tmp_path, "test").images.shape == (12, 3, 32, 32)


def test_python2_pickle_loads_like_numpy_does() -> None:
    ours = safe_loads(PY2_PICKLE)
    real = pickle.loads(PY2_PICKLE, encoding="bytes")  # trusted bytes written above
    assert isinstance(ours, dict)
    np.testing.assert_array_equal(ours[b"data"], real[b"data"])
    assert ours[b"data"].dtype == np.uint8 and ours[b"fine_labels"] == [0, 1]


def test_split_dir_option(tmp_path) -> None:
    fake = write_cifar_fs(tmp_path / "data", split_files=False)
    other = {
        "train": fake.classes["test"],
        "val": fake.classes["val"],
        "test": fake.classes["train"],
    }
    write_split_files(tmp_path / "my_split", other)
    data = load_cifar_fs(tmp_path / "data", "train", split_dir=tmp_path / "my_split")
    assert data.class_names == tuple(fake.classes["test"])
    with pytest.raises(DatasetError, match="missing directory"):
        load_cifar_fs(tmp_path / "data", "train", split_dir=tmp_path / "nowhere")


def test_builtin_standard_split_without_split_files(tmp_path) -> None:
    names = sorted(c for split in SPLITS for c in STANDARD_SPLIT[split])
    write_cifar_fs(tmp_path, names=names, train_per_class=1, test_per_class=0, split_files=False)
    sizes = {s: load_cifar_fs(tmp_path, s, channels=1).num_classes for s in SPLITS}
    assert sizes == {"train": 64, "val": 16, "test": 20}
    assert load_cifar_fs(tmp_path, "test").class_names == STANDARD_SPLIT["test"]


def test_missing_root_shows_expected_layout(tmp_path) -> None:
    with pytest.raises(DatasetError) as err:
        load_cifar_fs(tmp_path / "absent", "train")
    message = str(err.value)
    assert "expected layout" in message and "cifar-100-python/" in message
    assert "does not exist" in message


def test_missing_meta_lists_what_was_found(tmp_path) -> None:
    write_cifar_fs(tmp_path)
    (tmp_path / "cifar-100-python" / "meta").unlink()
    with pytest.raises(DatasetError, match="missing file .*meta") as err:
        load_cifar_fs(tmp_path, "train")
    assert "found under" in str(err.value) and "train (" in str(err.value)


def test_truncated_pickle(tmp_path) -> None:
    write_cifar_fs(tmp_path)
    truncate(tmp_path / "cifar-100-python" / "train")
    with pytest.raises(DatasetError, match="truncated, corrupt or unsafe pickle"):
        load_cifar_fs(tmp_path, "train")


def test_malicious_pickle_is_refused_and_not_run(tmp_path) -> None:
    write_cifar_fs(tmp_path)
    marker = tmp_path / "pwned"
    meta = tmp_path / "cifar-100-python" / "meta"
    meta.write_bytes(pickle.dumps({b"fine_label_names": _Evil(marker)}, protocol=2))
    with pytest.raises(DatasetError, match="refused global"):
        load_cifar_fs(tmp_path, "train")
    assert not marker.exists()
    for payload in (pickle.dumps(eval, protocol=4), pickle.dumps(np.array([1, "a"], dtype=object))):
        with pytest.raises(UnsafePickleError):
            safe_loads(payload)


def test_malformed_batch_contents(tmp_path) -> None:
    write_cifar_fs(tmp_path)
    train = tmp_path / "cifar-100-python" / "train"
    train.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"fine_labels": [0, 1]}))
    with pytest.raises(DatasetError, match=r"expected \(N, 3072\)"):
        load_cifar_fs(tmp_path, "train")
    train.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0]}))
    with pytest.raises(DatasetError, match="one int per row"):
        load_cifar_fs(tmp_path, "train")


def test_bad_split_files(tmp_path) -> None:
    fake = write_cifar_fs(tmp_path)
    folder = tmp_path / "splits" / "bertinetto"
    (folder / "val.txt").write_text("no_such_class\n")
    with pytest.raises(DatasetError, match="not in CIFAR-100"):
        load_cifar_fs(tmp_path, "val")
    (folder / "val.txt").write_text(fake.classes["train"][0] + "\n")
    with pytest.raises(DatasetError, match="classes in both val and train"):
        load_cifar_fs(tmp_path, "val")


def test_wrong_split_name(tmp_path) -> None:
    write_cifar_fs(tmp_path)
    with pytest.raises(DatasetError, match="unknown split 'training'(.|\n)*expected layout"):
        load_cifar_fs(tmp_path, "training")
