"""The glyph renderer on a tiny subset: 2 alphabets x 3 letters x 4 samples.

Needs the DejaVu fonts (Debian ``fonts-dejavu-core``); skipped with a message without them.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from scripts.datasets.glyphs_render.alphabets import (
    ALPHABETS,
    FONT_PACKAGES,
    Alphabet,
    apt_install_command,
)
from scripts.datasets.glyphs_render.build import GlyphSet, build_dataset, write_dataset
from scripts.datasets.glyphs_render.designs import Thresholds
from scripts.datasets.glyphs_render.fonts import (
    FontFace,
    FontsMissingError,
    package_font_files,
    read_faces,
)
from scripts.datasets.glyphs_render.raster import UNDISTORTED, RenderParams, distort, render_base
from scripts.datasets.glyphs_render.split import assign_splits

DEJAVU = Path("/usr/share/fonts/truetype/dejavu")
FACES = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf")
TINY = (
    Alphabet("latin", (0x47, 0x4B, 0x52)),  # G K R
    Alphabet("greek", (0x3B1, 0x3B2, 0x3B3)),  # alpha beta gamma
)
PARAMS = RenderParams(images_per_class=4)
THRESHOLDS = Thresholds(min_designs=1)


@pytest.fixture(scope="module")
def faces() -> list[FontFace]:
    paths = [DEJAVU / name for name in FACES]
    if not all(p.is_file() for p in paths):
        pytest.skip(
            f"needs the DejaVu fonts in {DEJAVU}: apt-get install -y fonts-dejavu-core "
            "(the full renderer needs: " + apt_install_command() + ")"
        )
    return [face for p in paths for face in read_faces(str(p), "fonts-dejavu-core", "")]


def _build(faces: list[FontFace], seed: int, params: RenderParams = PARAMS) -> GlyphSet:
    return build_dataset(faces, TINY, params=params, thresholds=THRESHOLDS, seed=seed)


def test_tiny_render_shapes(faces: list[FontFace]) -> None:
    glyphs = _build(faces, seed=1)
    images = glyphs.images["train"]  # latin and greek share a homoglyph group: both train
    assert images.shape == (6, 4, 32, 32)
    assert images.dtype == np.uint8
    assert glyphs.images["val"].shape == (0, 4, 32, 32)
    assert (images.reshape(24, -1).max(axis=1) > 128).all()  # ink is high
    assert (images[:, :, 0, 0] == 0).mean() > 0.9  # background is 0
    assert glyphs.manifest["splits"]["train"]["classes"][0] == "latin/U+0047"  # type: ignore[index]


def test_deterministic_for_a_seed(faces: list[FontFace], tmp_path: Path) -> None:
    first, second = _build(faces, seed=3), _build(faces, seed=3)
    assert np.array_equal(first.images["train"], second.images["train"])
    digests = [
        write_dataset(g, tmp_path / f"{i}" / "g.npz", tmp_path / f"{i}" / "g.json")
        for i, g in enumerate((first, second))
    ]
    assert digests[0] == digests[1]
    assert hashlib.sha256((tmp_path / "0" / "g.npz").read_bytes()).hexdigest() == digests[0]
    assert (tmp_path / "0" / "g.json").read_bytes() == (tmp_path / "1" / "g.json").read_bytes()
    other = _build(faces, seed=4)
    assert not np.array_equal(first.images["train"], other.images["train"])


def test_distortions_change_pixels(faces: list[FontFace]) -> None:
    plain_params = replace(UNDISTORTED, images_per_class=4)
    plain, distorted = _build(faces, seed=5, params=plain_params), _build(faces, seed=5)
    assert not np.array_equal(plain.images["train"], distorted.images["train"])

    base = render_base(str(DEJAVU / "DejaVuSans.ttf"), 0, 0x47, PARAMS)
    assert base is not None
    reference = distort(base, np.random.default_rng(0), UNDISTORTED)
    assert np.array_equal(reference, distort(base, np.random.default_rng(1), UNDISTORTED))
    thicker = replace(UNDISTORTED, stroke_probs=(0.0, 0.0, 1.0, 0.0))
    thinner = replace(UNDISTORTED, stroke_probs=(1.0, 0.0, 0.0, 0.0))
    rotated = replace(UNDISTORTED, rotation_deg=12.0)
    sheared = replace(UNDISTORTED, shear=0.2)
    scaled = replace(UNDISTORTED, scale_min=0.85, scale_max=0.9)
    shifted = replace(UNDISTORTED, translate=0.06)
    for params in (thicker, thinner, rotated, sheared, scaled, shifted):
        sample = distort(base, np.random.default_rng(0), params)
        assert not np.array_equal(sample, reference), params
    ink = reference.astype(float).sum()
    assert distort(base, np.random.default_rng(0), thicker).astype(float).sum() > ink
    assert distort(base, np.random.default_rng(0), thinner).astype(float).sum() < ink
    samples = [distort(base, np.random.default_rng(s), PARAMS) for s in range(3)]
    assert not np.array_equal(samples[0], samples[1])
    assert not np.array_equal(samples[1], samples[2])


def test_designs_are_used_once_before_repeating(faces: list[FontFace]) -> None:
    glyphs = _build(faces, seed=6)
    manifest = glyphs.manifest
    n_designs = {a["name"]: len(a["designs"]) for a in manifest["alphabets"]}  # type: ignore[attr-defined]
    classes = manifest["splits"]["train"]["classes"]  # type: ignore[index]
    for name, row in zip(classes, glyphs.designs["train"], strict=True):
        assert len(set(row.tolist())) == min(n_designs[name.split("/")[0]], 4)


def test_split_keeps_homoglyph_groups_and_fractions() -> None:
    counts = {a.name: len(a.letters) for a in ALPHABETS}
    split = assign_splits(counts, (0.64, 0.16, 0.20), seed=0)
    assert {split[n] for n in ("latin", "greek", "cyrillic", "armenian")} == {"train"}
    total = sum(counts.values())
    for name, target in (("train", 0.64), ("val", 0.16), ("test", 0.20)):
        share = sum(c for a, c in counts.items() if split[a] == name) / total
        assert abs(share - target) < 0.03
    assert split == assign_splits(counts, (0.64, 0.16, 0.20), seed=0)
    pinned = assign_splits(counts, (0.64, 0.16, 0.20), seed=0, train_only=["thai", "khmer"])
    assert pinned["thai"] == pinned["khmer"] == "train"


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs a Debian system")
def test_missing_packages_name_the_install_command() -> None:
    with pytest.raises(FontsMissingError, match="apt-get install"):
        package_font_files(["fonts-this-package-does-not-exist"])
    assert all(p in apt_install_command() for p in FONT_PACKAGES)
