"""Loads the real Fashion-MNIST installed by Debian's ``dataset-fashion-mnist`` package."""

import numpy as np
import pytest

from free_common.data.fashion_mnist import CLASS_NAMES, DEFAULT_ROOT, load_fashion_mnist

pytestmark = pytest.mark.integration


def test_debian_fashion_mnist() -> None:
    if not (DEFAULT_ROOT / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(
            f"Fashion-MNIST is not installed in {DEFAULT_ROOT}: "
            "run `apt-get install dataset-fashion-mnist` to enable this test"
        )
    data = load_fashion_mnist(split="test")
    assert data.images.shape == (70000, 1, 28, 28)
    assert data.class_names == CLASS_NAMES
    assert np.bincount(data.labels).tolist() == [7000] * 10
    mean = data.images.mean() / 255
    assert 0.25 < mean < 0.32  # the published mean is 0.286
    small = load_fashion_mnist(split="test", image_size=32, channels=3)
    assert small.images.shape == (70000, 3, 32, 32)
