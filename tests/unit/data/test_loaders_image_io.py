import numpy as np
import pytest
from PIL import Image

from free_common.data.base import DatasetError
from free_common.data.image_io import (
    check_request,
    convert_channels,
    decode_image,
    decode_images,
    prepare_arrays,
    resize_images,
)


def test_rgb_to_grey_matches_pillow_luma() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 3, 7, 9), dtype=np.uint8)
    grey = convert_channels(images, 1)
    assert grey.shape == (5, 1, 7, 9)
    for img, g in zip(images, grey, strict=True):
        expected = np.asarray(Image.fromarray(img.transpose(1, 2, 0)).convert("L"))
        np.testing.assert_array_equal(g[0], expected)


def test_grey_to_rgb_repeats_and_same_channels_is_identity() -> None:
    images = np.arange(2 * 1 * 3 * 3, dtype=np.uint8).reshape(2, 1, 3, 3)
    rgb = convert_channels(images, 3)
    assert rgb.shape == (2, 3, 3, 3)
    assert all((rgb[:, k] == images[:, 0]).all() for k in range(3))
    assert convert_channels(images, 1) is images


def test_resize_matches_pillow_bilinear_and_noop_when_same_size() -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(3, 3, 16, 16), dtype=np.uint8)
    small = resize_images(images, 5)
    expected = np.asarray(
        Image.fromarray(images[1].transpose(1, 2, 0)).resize((5, 5), Image.Resampling.BILINEAR)
    )
    np.testing.assert_array_equal(small[1], expected.transpose(2, 0, 1))
    assert resize_images(images, 16) is images
    assert prepare_arrays(images, 4, 1).shape == (3, 1, 4, 4)


def test_decode_image_flattens_alpha_on_white_and_crops(tmp_path) -> None:
    rgba = np.zeros((6, 6, 4), dtype=np.uint8)
    rgba[2:4, 2:4] = (200, 100, 0, 255)  # opaque square, transparent elsewhere
    Image.fromarray(rgba).save(tmp_path / "a.png")
    out = decode_image(tmp_path / "a.png", 6, 3)
    assert out.shape == (3, 6, 6)
    assert tuple(out[:, 0, 0]) == (255, 255, 255)
    crop = decode_image(tmp_path / "a.png", 2, 3, box=(2, 2, 4, 4))
    assert (crop[0] == 200).all() and (crop[1] == 100).all() and (crop[2] == 0).all()


def test_decode_errors_name_the_file(tmp_path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="broken.png"):
        decode_images([bad], 4, 1, workers=2)
    with pytest.raises(DatasetError, match="missing.png"):
        decode_image(tmp_path / "missing.png", 4, 1)
    Image.new("RGB", (4, 4)).save(tmp_path / "ok.png")
    with pytest.raises(DatasetError, match="outside image"):
        decode_image(tmp_path / "ok.png", 4, 1, box=(10, 10, 12, 12))


@pytest.mark.parametrize(("size", "channels"), [(0, 1), (8, 2), (8, 4)])
def test_bad_request_is_refused(size: int, channels: int) -> None:
    with pytest.raises(DatasetError):
        check_request(size, channels)


def test_crop_box_stays_right_when_jpeg_decodes_at_reduced_scale(tmp_path) -> None:
    array = np.full((320, 400, 3), 255, dtype=np.uint8)
    array[100:300, 200:380] = (200, 30, 30)  # the box to crop, in full-size pixels
    Image.fromarray(array).save(tmp_path / "big.jpg", quality=95)
    out = decode_image(tmp_path / "big.jpg", 8, 3, box=(210, 110, 370, 290)).astype(int)
    assert np.abs(out - np.array([200, 30, 30])[:, None, None]).max() <= 6
    whole = decode_image(tmp_path / "big.jpg", 8, 1)
    assert whole[0, 0, 0] >= 250  # the white corner
