import numpy as np
import pytest

from free_common.data.base import SPLITS, DatasetError
from free_common.data.cub import load_cub, split_of_class
from tests.unit.data.fake_datasets import pixel_value, truncate, write_cub


def test_split_rule_gives_100_50_50() -> None:
    splits = [split_of_class(i) for i in range(200)]
    assert [splits.count(s) for s in SPLITS] == [100, 50, 50]
    assert splits[:4] == ["train", "val", "train", "test"]


@pytest.mark.parametrize("split", SPLITS)
def test_split_shapes_labels_names(tmp_path, split) -> None:
    fake = write_cub(tmp_path)
    data = load_cub(tmp_path, split, image_size=8)
    n = len(fake.classes[split])
    assert (n, data.name) == ({"train": 6, "val": 3, "test": 3}[split], f"cub/{split}")
    assert data.images.shape == (4 * n, 3, 8, 8)
    assert data.class_names == tuple(fake.classes[split])
    assert np.bincount(data.labels).tolist() == [4] * n


def test_root_may_be_the_cub_folder_itself(tmp_path) -> None:
    write_cub(tmp_path)
    data = load_cub(tmp_path / "CUB_200_2011", "test", image_size=4, channels=1)
    assert data.images.shape == (12, 1, 4, 4)


def test_splits_are_disjoint(tmp_path) -> None:
    write_cub(tmp_path)
    names = [set(load_cub(tmp_path, s, image_size=4).class_names) for s in SPLITS]
    assert sum(len(n) for n in names) == len(set().union(*names)) == 12


def test_crop_to_bounding_box(tmp_path) -> None:
    write_cub(tmp_path, size=16)
    plain = load_cub(tmp_path, "val", image_size=16)
    cropped = load_cub(tmp_path, "val", image_size=8, crop_to_bbox=True)
    assert plain.images[0, :, 0, 0].max() <= 3  # the black border is kept without cropping
    value = pixel_value(1, 0)  # class 1 is the first val class
    # no black border left: only JPEG ringing at the box edge differs from the flat value
    assert np.abs(cropped.images[0].astype(int) - value).max() <= 10
    assert np.abs(cropped.images[0, :, 2:6, 2:6].astype(int) - value).max() <= 2


def test_crop_needs_bounding_boxes(tmp_path) -> None:
    write_cub(tmp_path, boxes=False)
    assert load_cub(tmp_path, "train", image_size=4).num_classes == 6
    with pytest.raises(DatasetError, match=r"missing file .*bounding_boxes\.txt"):
        load_cub(tmp_path, "train", crop_to_bbox=True)


def test_missing_root_and_metadata(tmp_path) -> None:
    with pytest.raises(DatasetError, match="expected layout"):
        load_cub(tmp_path / "absent", "train")
    write_cub(tmp_path)
    (tmp_path / "CUB_200_2011" / "classes.txt").unlink()
    with pytest.raises(DatasetError, match=r"missing file .*classes\.txt"):
        load_cub(tmp_path, "train")


def test_malformed_rows(tmp_path) -> None:
    write_cub(tmp_path)
    labels = tmp_path / "CUB_200_2011" / "image_class_labels.txt"
    labels.write_text(labels.read_text().replace("1 1\n", "1 1 extra\n", 1))
    with pytest.raises(DatasetError, match="row 1"):
        load_cub(tmp_path, "train")
    labels.write_text(labels.read_text().replace("1 1 extra\n", "1 999\n", 1))
    with pytest.raises(DatasetError, match="class id 999"):
        load_cub(tmp_path, "train")


def test_truncated_image_is_named(tmp_path) -> None:
    write_cub(tmp_path, size=32)
    victim = next((tmp_path / "CUB_200_2011" / "images" / "001.Bird_00").iterdir())
    truncate(victim, 0.4)
    with pytest.raises(DatasetError, match=victim.name):
        load_cub(tmp_path, "train")


def test_wrong_split_name(tmp_path) -> None:
    write_cub(tmp_path)
    with pytest.raises(DatasetError, match="unknown split"):
        load_cub(tmp_path, "valid")
