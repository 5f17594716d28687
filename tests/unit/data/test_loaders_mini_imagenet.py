import numpy as np
import pytest

from free_common.data.base import SPLITS, DatasetError
from free_common.data.mini_imagenet import load_mini_imagenet
from tests.unit.data.fake_datasets import pixel_value, save_image, truncate, write_mini_imagenet


@pytest.mark.parametrize("split", SPLITS)
def test_split_shapes_labels_names(tmp_path, split) -> None:
    fake = write_mini_imagenet(tmp_path)
    data = load_mini_imagenet(tmp_path, split, image_size=8)
    assert data.name == f"mini-imagenet/{split}"
    assert data.images.shape == (12, 3, 8, 8)
    assert data.class_names == tuple(fake.classes[split])
    assert np.bincount(data.labels).tolist() == [4, 4, 4]
    g = SPLITS.index(split) * 3 + 1
    first = data.indices_by_class()[1][0]
    assert abs(int(data.images[first].mean()) - pixel_value(g, 0)) <= 2  # JPEG round trip


def test_default_resize_to_84_and_grey(tmp_path) -> None:
    write_mini_imagenet(tmp_path)
    assert load_mini_imagenet(tmp_path, "train").images.shape == (12, 3, 84, 84)
    assert load_mini_imagenet(tmp_path, "train", image_size=16, channels=1).image_shape == (
        1,
        16,
        16,
    )


def test_splits_are_disjoint(tmp_path) -> None:
    write_mini_imagenet(tmp_path)
    names = [set(load_mini_imagenet(tmp_path, s, image_size=4).class_names) for s in SPLITS]
    assert sum(len(n) for n in names) == len(set().union(*names)) == 9


def test_class_subfolder_variant(tmp_path) -> None:
    for c, wnid in enumerate(["n02", "n01"]):
        for i in range(2):
            save_image(tmp_path / "val" / wnid / f"{wnid}_{i}.jpg", pixel_value(c, i))
    data = load_mini_imagenet(tmp_path, "val", image_size=8)
    assert data.class_names == ("n01", "n02") and data.images.shape == (4, 3, 8, 8)


def test_missing_root_and_csv(tmp_path) -> None:
    with pytest.raises(DatasetError, match="expected layout"):
        load_mini_imagenet(tmp_path / "absent", "train")
    write_mini_imagenet(tmp_path)
    (tmp_path / "val.csv").unlink()
    with pytest.raises(DatasetError, match=r"missing file .*val\.csv") as err:
        load_mini_imagenet(tmp_path, "val")
    assert "train.csv (" in str(err.value)  # the listing of what was found


def test_malformed_csv(tmp_path) -> None:
    write_mini_imagenet(tmp_path)
    csv = tmp_path / "train.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(["file,label", *lines[1:]]))
    with pytest.raises(DatasetError, match="header 'filename,label'"):
        load_mini_imagenet(tmp_path, "train")
    csv.write_text("\n".join([lines[0], lines[1], "a.jpg,n1,extra"]))
    with pytest.raises(DatasetError, match="line 3"):
        load_mini_imagenet(tmp_path, "train")
    csv.write_text("\n".join([lines[0], "../secret.jpg,n1"]))
    with pytest.raises(DatasetError, match="not a plain file name"):
        load_mini_imagenet(tmp_path, "train")


def test_missing_and_truncated_images(tmp_path) -> None:
    write_mini_imagenet(tmp_path, size=32)
    victim = tmp_path / "images" / "n0000000000000001.jpg"
    truncate(victim, 0.4)
    with pytest.raises(DatasetError, match="n0000000000000001.jpg") as err:
        load_mini_imagenet(tmp_path, "train")
    assert "expected layout" in str(err.value)
    victim.unlink()
    with pytest.raises(DatasetError, match="missing from"):
        load_mini_imagenet(tmp_path, "train")


def test_wrong_split_name(tmp_path) -> None:
    write_mini_imagenet(tmp_path)
    with pytest.raises(DatasetError, match="unknown split"):
        load_mini_imagenet(tmp_path, "meta-train")
