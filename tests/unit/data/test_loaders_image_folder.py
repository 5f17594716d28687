import numpy as np
import pytest
from PIL import Image

from free_common.data.base import DatasetError
from free_common.data.image_folder import load_image_folder
from tests.unit.data.fake_datasets import pixel_value, save_image, write_image_folder


def test_classes_sorted_mixed_formats(tmp_path) -> None:
    write_image_folder(tmp_path)
    (tmp_path / "bee" / "notes.txt").write_text("ignored")
    (tmp_path / ".cache").mkdir()
    data = load_image_folder(tmp_path, 8, 3)
    assert data.class_names == ("ant", "bee", "cat")
    assert data.images.shape == (12, 3, 8, 8)
    assert np.bincount(data.labels).tolist() == [4, 4, 4]
    for c, rows in enumerate(data.indices_by_class()):
        for i, r in enumerate(rows):  # files sorted by name: img0 .. img3
            assert abs(int(data.images[r].mean()) - pixel_value(c, i)) <= 2


def test_resize_and_grey_from_rgba_and_grey_files(tmp_path) -> None:
    save_image(tmp_path / "a" / "grey.png", 50, size=12, mode="L")
    (tmp_path / "b").mkdir()
    Image.fromarray(np.zeros((6, 6, 4), np.uint8)).save(tmp_path / "b" / "clear.png")
    data = load_image_folder(tmp_path, 4, 1)
    assert data.images.shape == (2, 1, 4, 4)
    assert (data.images[0] == 50).all()
    assert (data.images[1] == 255).all()  # fully transparent composites to white
    assert load_image_folder(tmp_path, 4, 3).images.shape == (2, 3, 4, 4)


def test_unreadable_image_is_named(tmp_path) -> None:
    write_image_folder(tmp_path)
    (tmp_path / "ant" / "zz_broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DatasetError, match="zz_broken.png"):
        load_image_folder(tmp_path, 8, 3)


def test_empty_class_and_no_classes(tmp_path) -> None:
    write_image_folder(tmp_path)
    (tmp_path / "dog").mkdir()
    with pytest.raises(DatasetError, match="dog holds no images"):
        load_image_folder(tmp_path, 8, 3)
    loose = tmp_path / "loose"
    save_image(loose / "x.png", 1)
    with pytest.raises(DatasetError, match="no class folders .*1 images lie directly"):
        load_image_folder(loose, 8, 3)
    with pytest.raises(DatasetError, match="missing directory"):
        load_image_folder(tmp_path / "absent", 8, 3)
