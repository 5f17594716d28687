"""Pool building and caching of ``scripts.bench.teacher_pool``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from free_common.data.base import ClassImages
from scripts.bench import teacher_pool
from scripts.bench.teacher_pool import (
    PoolError,
    PoolSettings,
    build_pool,
    member_images,
    synthetic_split,
    teachers_of,
)

TINY = PoolSettings(
    archs=("conv4", "resnet10"), teachers=2, epochs=1, conv4_width=4, resnet_width=2
)


def _data() -> ClassImages:
    return synthetic_split("val", per_class=6, size=16)


def test_synthetic_split_shapes() -> None:
    data = synthetic_split("test", per_class=4, size=16)
    assert data.images.shape == (12 * 4, 1, 16, 16)
    assert data.num_classes == 12
    assert data.images.dtype.name == "uint8"


def test_settings_cycle_architectures_and_validate() -> None:
    assert [TINY.spec(i, (1, 16, 16)).arch for i in range(3)] == ["conv4", "resnet10", "conv4"]
    assert TINY.spec(1, (1, 16, 16)).width == 2
    with pytest.raises(PoolError):
        PoolSettings(archs=())
    with pytest.raises(PoolError):
        PoolSettings(teachers=0)


def test_pool_is_cached_and_prefix_consistent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _data()
    members = build_pool(data, TINY, cache_dir=tmp_path, progress=False)
    assert [m.teacher_id for m in members] == ["t000", "t001"]
    assert all(len(set(m.classes)) == 5 for m in members)

    def no_training(*_: object) -> None:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(teacher_pool, "_train_member", no_training)
    again = build_pool(data, TINY, cache_dir=tmp_path, progress=False)
    smaller = build_pool(
        data, PoolSettings(**{**TINY.__dict__, "teachers": 1}), cache_dir=tmp_path, progress=False
    )
    assert [m.classes for m in again] == [m.classes for m in members]
    assert smaller[0].classes == members[0].classes
    for name, value in smaller[0].state_dict.items():
        assert torch.equal(value, members[0].state_dict[name])
    teachers = teachers_of(again)
    out = teachers[1].model(torch.rand(2, 1, 16, 16))
    assert out.shape == (2, 5)


def test_too_few_classes_raises(tmp_path: Path) -> None:
    data = _data().subset([0, 1, 2])
    with pytest.raises(PoolError, match="fewer than 5"):
        build_pool(data, TINY, cache_dir=tmp_path, progress=False)


def test_vocabulary_draws_every_teacher_from_a_shared_subset_of_classes(tmp_path: Path) -> None:
    data = synthetic_split("train", per_class=4, size=16)
    settings = PoolSettings(teachers=12, epochs=1, conv4_width=2, vocabulary=8)
    draws = teacher_pool._draw_classes(data.num_classes, settings)
    words = {c for classes in draws for c in classes}
    assert len(words) <= 8 and all(len(set(c)) == 5 for c in draws)
    assert teacher_pool._draw_classes(data.num_classes, settings) == draws
    with pytest.raises(PoolError):
        PoolSettings(vocabulary=3)
    with pytest.raises(PoolError):
        teacher_pool._draw_classes(data.num_classes, replace(settings, vocabulary=1000))


def test_pools_without_a_vocabulary_keep_their_cache_file() -> None:
    """Adding the field must not orphan the pools cached before it (hours of training)."""
    path = teacher_pool.cache_path(_data(), TINY, Path("/cache"))
    assert path.name == "pool-a751069d201adb6a6961.pt"  # the name before `vocabulary` existed
    assert teacher_pool.cache_path(_data(), replace(TINY, vocabulary=6), Path("/c")) != path


def test_member_images_are_the_split_each_member_trained_and_chose_its_epoch_on(
    tmp_path: Path,
) -> None:
    data = _data()
    members = build_pool(data, TINY, cache_dir=tmp_path, progress=False)
    for index, member in enumerate(members):
        train_x, train_y = member_images(data, TINY, index, member.classes, "train")
        held_x, held_y = member_images(data, TINY, index, member.classes, "held")
        own = data.subset(member.classes)
        assert train_x.shape[0] + held_x.shape[0] == own.images.shape[0]
        assert set(held_y.tolist()) == set(range(5)) and set(train_y.tolist()) == set(range(5))
        assert float(held_x.min()) >= 0.0 and float(held_x.max()) <= 1.0
        # no held-out image is a training image
        flat_train = {tuple(x.flatten().tolist()) for x in train_x}
        assert not any(tuple(x.flatten().tolist()) in flat_train for x in held_x)
        # the member's recorded hold-out accuracy is measured on exactly these images
        with torch.no_grad():
            predicted = member.teacher().model(held_x).argmax(dim=1)
        assert float((predicted == held_y).float().mean()) == pytest.approx(member.holdout_accuracy)
    with pytest.raises(PoolError, match="part"):
        member_images(data, TINY, 0, members[0].classes, "test")
