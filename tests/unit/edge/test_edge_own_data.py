"""``python -m client.edge evaluate --dataset folder|icons``: one's own classes on the device."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from client.edge import cli, datasets
from client.edge.images import decode_image
from free_common import signing
from free_common.data.image_io import decode_image as server_decode_image
from free_common.export.manifest import write_bundle
from tests.edge_bundles import signed_bundle

pytestmark = pytest.mark.timeout(30)

PEM, RAW = signing.generate_keypair()
PRIVATE = signing.load_private_key(PEM)


def _bundle(root: Path) -> list[str]:
    """A tiny 1x4x4 prototype bundle; the CLI's model arguments for it."""
    folder = write_bundle(signed_bundle(PRIVATE), root / "bundle")
    (root / "server-ed25519.pub.hex").write_text(RAW.hex() + "\n")
    return ["--bundle", str(folder), "--public-key", str(root / "server-ed25519.pub.hex")]


def _class_folders(root: Path, classes: int = 4, per_class: int = 4) -> Path:
    """RGB images of differing sizes; class c lights quadrant c (a dot-product head sorts them)."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class-{c}").mkdir(parents=True)
        for i in range(per_class):
            side = 12 + 4 * i
            pixels = rng.integers(0, 20, (side, side, 3), dtype=np.uint8)
            half = side // 2
            rows, cols = slice(half * (c // 2), half * (c // 2 + 1)), slice(half * (c % 2), None)
            pixels[rows, cols][:, :half] = (200 + 10 * c, 255, 180)
            Image.fromarray(pixels).save(root / f"class-{c}" / f"{i}.png")
    return root


def _evaluate(model: list[str], *extra: str) -> int:
    args = ["evaluate", *model, "--ways", "3", "--shots", "1", "--queries", "2"]
    return cli.main([*args, "--episodes", "5", *extra])


def test_evaluate_on_a_folder_of_class_folders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _class_folders(tmp_path / "held-out")
    assert _evaluate(_bundle(tmp_path), "--dataset", "folder", "--data", str(data)) == 0
    out = capsys.readouterr().out
    assert out.startswith("folder 3-way 1-shot, 5 episodes: accuracy 100.00 +- 0.00 %")


def _icons_npz(path: Path, labels: np.ndarray | None = None, channels: int = 3) -> Path:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (15, channels, 8, 8), dtype=np.uint8)
    labels = np.repeat(np.arange(5), 3) if labels is None else labels
    np.savez(path, test=images, test_labels=labels, val=images[:3], val_labels=labels[:3])
    return path


def test_evaluate_on_icons_reads_the_rgb_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    npz = _icons_npz(tmp_path / "icons-v1.npz")
    data = datasets.load_npz_split(npz, "test")
    assert data.images.shape == (15, 3, 8, 8) and data.labels.tolist()[:4] == [0, 0, 0, 1]
    assert _evaluate(_bundle(tmp_path), "--dataset", "icons", "--data", str(npz)) == 0
    assert capsys.readouterr().out.startswith("icons 3-way 1-shot, 5 episodes: accuracy ")


def test_icons_default_to_the_package_archive() -> None:
    args = cli.build_parser().parse_args(
        ["evaluate", "--bundle", "b", "--public-key", "k", "--dataset", "icons"]
    )
    assert args.data is None
    assert datasets.DEFAULT_ICONS.name == "icons-v1.npz"
    assert datasets.DEFAULT_ICONS.parent == datasets.DEFAULT_GLYPHS.parent


def _fifo_image(root: Path) -> None:
    os.mkfifo(root / "class-1" / "9.png")


def _empty_class(root: Path) -> None:
    (root / "class-9").mkdir()


def _broken_image(root: Path) -> None:
    (root / "class-2" / "0.png").write_bytes(b"\x89PNG but not really")


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("missing", "no such folder: .*nowhere"),
        ("no --data", "--dataset folder needs --data DIR"),
        ("no classes", "holds no class folders"),
        ("empty class", "class folder .*class-9 holds no images"),
        ("unreadable image", "cannot read image .*class-2/0.png"),
        ("named pipe", "cannot read image .*9.png: .*named pipe"),
        ("too few images", "only 0 classes have 7 images .* a 3-way episode needs 3"),
    ],
)
def test_folder_errors_are_clear(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], problem: str, message: str
) -> None:
    model = _bundle(tmp_path)
    data = _class_folders(tmp_path / "held-out")
    extra = ["--dataset", "folder", "--data", str(data)]
    if problem == "missing":
        extra[-1] = str(tmp_path / "nowhere")
    elif problem == "no --data":
        extra = extra[:2]
    elif problem == "no classes":
        extra[-1] = str(data / "class-0")
    elif problem == "too few images":
        extra += ["--shots", "5"]
    else:
        {"empty class": _empty_class, "unreadable image": _broken_image}.get(problem, _fifo_image)(
            data
        )
    assert _evaluate(model, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert __import__("re").search(message, err), err


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"labels": np.arange(14)}, "with test_labels \\(N,\\)"),
        ({"channels": 2}, "must be \\(N, 1 or 3, H, W\\)"),
        ({"labels": -np.ones(15, dtype=np.int64)}, "non-negative integers"),
    ],
)
def test_an_archive_whose_arrays_disagree_is_refused(
    tmp_path: Path, arrays: dict[str, object], message: str
) -> None:
    npz = _icons_npz(tmp_path / "x.npz", **arrays)  # type: ignore[arg-type]
    with pytest.raises(datasets.DataError, match=message):
        datasets.load_npz_split(npz, "test")


def test_archive_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(datasets.DataError, match="archive not found: .*gone.npz"):
        datasets.load_npz_split(tmp_path / "gone.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK not a zip")
    with pytest.raises(datasets.DataError, match="not a readable .npz archive"):
        datasets.load_npz_split(tmp_path / "junk.npz")
    os.mkfifo(tmp_path / "pipe.npz")
    with pytest.raises(datasets.DataError, match="archive refused: .*named pipe"):
        datasets.load_npz_split(tmp_path / "pipe.npz")


@pytest.mark.parametrize("channels", [1, 3])
def test_edge_and_server_decode_an_image_the_same_way(tmp_path: Path, channels: int) -> None:
    """Transparent pixels on white and grey by luma on both sides (the edge once kept the
    RGB values under alpha 0, and took the red plane as grey when converting arrays)."""
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 255, (20, 26, 4), dtype=np.uint8)
    rgba[:5, :, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    edge = decode_image(tmp_path / "a.png", channels, 20)
    server = server_decode_image(tmp_path / "a.png", 20, channels)
    assert np.array_equal(edge, server)
    assert (edge[:, :5] == 255).all()
    rgb = rng.integers(0, 255, (2, 3, 6, 6), dtype=np.uint8)
    grey = datasets._to_float(rgb, 1, 6)
    from free_common.data.image_io import convert_channels

    assert np.array_equal(np.round(grey * 255).astype(np.uint8), convert_channels(rgb, 1))


@pytest.mark.skipif(not datasets.DEFAULT_ICONS.exists(), reason="icons-v1 is not on this branch")
def test_the_shipped_icon_archive_reads_on_the_edge() -> None:
    data = datasets.load_npz_split(datasets.DEFAULT_ICONS, "test")
    assert data.images.shape[1:] == (3, 32, 32) and len(data.labels) == len(data.images)
    assert np.bincount(data.labels).min() >= 10
