"""The real-image diagnostic: its inverter hands each teacher its own images; the study runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from free_common.config import InversionConfig
from scripts.studies import real_images
from tests.unit.free.synthetic import random_teacher, tiny_spec

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_each_teacher_recovers_its_own_real_images_with_their_labels() -> None:
    teacher = random_teacher("t7", tiny_spec(3, width=4))
    side = teacher.spec.image_size
    images = torch.rand(12, 1, side, side)
    labels = torch.arange(3).repeat_interleave(4)
    config = InversionConfig(images_per_class=5, image_size=side, channels=1)
    inverter = real_images.RealImageInverter(config, torch.device("cpu"), {"t7": (images, labels)})
    (got,) = inverter.invert([teacher], torch.Generator().manual_seed(0))
    assert got.teacher_id == "t7" and got.images.shape == (15, 1, side, side)
    assert got.targets.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    for image, target in zip(got.images, got.targets, strict=True):
        rows = [i for i in range(12) if torch.equal(images[i], image)]
        assert rows and all(int(labels[i]) == int(target) for i in rows)


def test_smoke_study_writes_a_unit_and_the_report_beside_the_bench(tmp_path: Path) -> None:
    args = ["--preset", "smoke", "--seeds", "0", "--out", str(tmp_path), "--threads", "1"]
    assert real_images.main([*args, "--cache-dir", str(tmp_path / "cache")]) == 0
    unit = json.loads((tmp_path / "real_images_smoke_units" / "seed0.json").read_text())
    assert unit["model"]["recovery"] == "real training images"
    assert set(unit["results"]) == set(real_images.SETTINGS)
    assert set(unit["results"]["glyphs-5w1s"]) == set(real_images.PROTOCOLS)
    rep = json.loads((tmp_path / "real_images_smoke.json").read_text())
    assert rep["seeds"] == [0] and len(rep["real_images"]["glyphs-5w1s"]["tuned"]) == 1
    text = (tmp_path / "real_images_smoke.md").read_text()
    assert "on real images (not data-free)" in text
    line = (tmp_path / "real_images_smoke_headline.md").read_text()
    assert line.startswith("5-way 1-shot, tuned / prototypes, 1 seed(s): real images ")
