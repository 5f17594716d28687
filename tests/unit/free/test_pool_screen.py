"""Screening a growing pool (``server.trust.PoolScreen``) and through the FREE trainer."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import free_common.free.screening as screening
import server.trust as trust
from free_common.config import DEFAULT_PRESET, FreeConfig, ScreeningConfig
from free_common.data.base import ClassImages
from free_common.free.teachers import InMemoryTeachers, Teacher, teacher_from_state_dict
from free_common.free.trust.probes import probe_images
from server.checkpoint import load_checkpoint
from server.free_training import FreeTrainer
from server.trust import PoolScreen
from tests.unit.free.synthetic import class_images, tiny_spec, trained_teacher

CFG = ScreeningConfig(probe_images=40, min_confidence=0.3)


def _copy(teacher: Teacher, name: str, noise: float = 0.05) -> Teacher:
    g = torch.Generator().manual_seed(0)
    state = {
        k: v + noise * v.std() * torch.randn(v.shape, generator=g)
        if v.is_floating_point() and v.numel() > 1 and "running" not in k
        else v.clone()
        for k, v in teacher.model.state_dict().items()
    }
    return teacher_from_state_dict(name, teacher.spec, state)


def _reordered(teacher: Teacher, name: str, seed: int = 0) -> Teacher:
    """A Conv4 copy of ``teacher`` whose hidden units are permuted in every layer.

    Each block's output channels (convolution, BatchNorm) take a new order and the next
    block's (or the head's) inputs follow, so the copy computes exactly what ``teacher``
    computes with every weight tensor rearranged.
    """
    state = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    blocks = sorted({k.split(".")[1] for k in state if k.startswith("backbone.")})
    for index, block in enumerate(blocks):
        width = state[f"backbone.{block}.0.weight"].shape[0]
        order = torch.randperm(width, generator=g)
        for key in [k for k in state if k.startswith(f"backbone.{block}.") and state[k].ndim]:
            state[key] = state[key][order]
        if index + 1 < len(blocks):
            key = f"backbone.{blocks[index + 1]}.0.weight"
            state[key] = state[key][:, order]
        else:  # the head reads the flattened (channels, height, width) features
            cells = state["head.weight"].shape[1] // width
            columns = (order[:, None] * cells + torch.arange(cells)).flatten()
            state["head.weight"] = state["head.weight"][:, columns]
    return teacher_from_state_dict(name, teacher.spec, state)


def _screen(val: ClassImages, config: ScreeningConfig = CFG) -> PoolScreen:
    return PoolScreen(config, probe_images(val, config.probe_images), max_classes=5)


def test_a_copy_arriving_later_is_excluded_and_its_original_kept(
    teachers: list[Teacher], val_split: ClassImages
) -> None:
    source = InMemoryTeachers(teachers[:2])
    screen = _screen(val_split)
    assert screen.screen(source.ids(), source.load) == ["t0", "t1"]
    assert screen.accepted(source.ids()) == ["t0", "t1"]
    source.add([_copy(teachers[0], "copy")])
    assert screen.screen(source.ids(), source.load) == ["copy"]
    assert screen.accepted(source.ids()) == ["t0", "t1"]
    verdict = screen.verdicts["copy"]
    assert not verdict["accepted"] and verdict["reason"].startswith("near-duplicate of t0")
    assert verdict["findings"][0]["check"] == "near_duplicate"
    assert verdict["findings"][0]["other"] == "t0" and verdict["seconds"] > 0


def test_a_copy_with_reordered_hidden_units_is_excluded_on_its_units(
    teachers: list[Teacher], val_split: ClassImages
) -> None:
    """Its weights look unrelated and its outputs match: the units decide."""
    copy = _reordered(teachers[0], "reordered")
    probes = probe_images(val_split, CFG.probe_images)
    assert torch.allclose(copy.model(probes), teachers[0].model(probes), atol=1e-5)
    source = InMemoryTeachers([*teachers[:2], copy])
    screen = _screen(val_split)
    screen.screen(source.ids(), source.load)
    assert screen.accepted(source.ids()) == ["t0", "t1"]
    (finding,) = screen.verdicts["reordered"]["findings"]
    assert finding["check"] == "near_duplicate" and finding["other"] == "t0"
    assert finding["value"] > 0.99 and "reordered: excluded" in finding["reason"]
    match = re.search(r"weight similarity (-?[0-9.]+)", finding["reason"])
    assert match is not None
    similarity = float(match[1])
    assert similarity < CFG.max_weight_similarity  # the weight rule alone would keep it


def test_an_output_match_whose_units_are_its_own_is_only_suspected(
    teachers: list[Teacher], val_split: ClassImages, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the units do not match (an owner of the same classes), the teacher is kept."""
    copy = _reordered(teachers[0], "reordered")
    source = InMemoryTeachers([teachers[0], copy])
    screen = _screen(val_split)
    monkeypatch.setattr(trust, "unit_match", lambda a, b: 0.5)
    screen.screen(source.ids(), source.load)
    verdict = screen.verdicts["reordered"]
    assert verdict["accepted"] and verdict["suspected"]
    assert "matched unit correlation 0.500" in verdict["findings"][0]["reason"]


def test_a_teacher_that_no_longer_loads_leaves_the_output_match_a_suspicion(
    teachers: list[Teacher], val_split: ClassImages
) -> None:
    """Its units cannot be measured (a damaged pool file): kept, suspected, nothing raised."""
    copy = _reordered(teachers[0], "reordered")
    source = InMemoryTeachers([teachers[0], copy])
    screen = _screen(val_split)
    screen.screen(["t0"], source.load)
    loads = {"t0": 0}

    def load_once(teacher_id: str) -> Teacher:
        if teacher_id == "t0":
            loads["t0"] += 1
            raise OSError("damaged file")
        return source.load(teacher_id)

    screen.screen(source.ids(), load_once)
    verdict = screen.verdicts["reordered"]
    assert verdict["accepted"] and verdict["suspected"] and loads["t0"] == 1
    assert "weights unrelated: suspected" in verdict["findings"][0]["reason"]


def test_each_teacher_is_measured_once_and_a_restored_screen_measures_nothing(
    teachers: list[Teacher], val_split: ClassImages, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = InMemoryTeachers(teachers)
    screen = _screen(val_split)
    screen.screen(source.ids(), source.load)
    screen.screen(source.ids(), source.load)  # nothing new: nothing measured again
    restored = _screen(val_split)
    restored.load_state_dict(screen.state_dict())

    def no_measuring(*_: object, **__: object) -> None:
        raise AssertionError("a screened teacher was measured again")

    monkeypatch.setattr(screening, "measure_teacher", no_measuring)
    assert restored.screen(source.ids(), source.load) == []
    assert restored.verdicts == screen.verdicts
    assert restored.fingerprints.keys() == screen.fingerprints.keys() == {"t0", "t1", "t2"}


def test_a_memo_screens_a_teacher_met_in_another_pool_once_with_the_same_verdict(
    teachers: list[Teacher], val_split: ClassImages, monkeypatch: pytest.MonkeyPatch
) -> None:
    memo: dict[str, trust.ScreenedAlone] = {}
    first = PoolScreen(CFG, probe_images(val_split, CFG.probe_images), max_classes=5, memo=memo)
    pool = InMemoryTeachers([teachers[0], teachers[1], _copy(teachers[0], "copy")])
    first.screen(pool.ids(), pool.load)
    assert len(memo) == 3
    measured = screening.measure_teacher
    calls: list[str] = []

    def counted(teacher: Teacher, *args: object, **kwargs: object) -> object:
        calls.append(teacher.teacher_id)
        return measured(teacher, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(screening, "measure_teacher", counted)
    # another pool holding t0 and its copy beside a new teacher: only that one is measured;
    # then a teacher with the id of a screened one but other weights is measured too
    changed = _copy(teachers[1], "t1", noise=0.5)
    again = PoolScreen(CFG, probe_images(val_split, CFG.probe_images), max_classes=5, memo=memo)
    other = InMemoryTeachers([teachers[2], teachers[0], _copy(teachers[0], "copy")])
    again.screen(other.ids(), other.load)
    assert calls == ["t2"]
    assert again.verdicts["copy"] == first.verdicts["copy"]  # judged against t0 again
    assert not again.verdicts["copy"]["accepted"]
    assert again.verdicts["t0"]["seconds"] == first.verdicts["t0"]["seconds"]  # as measured
    changed_pool = InMemoryTeachers([changed])
    PoolScreen(CFG, probe_images(val_split, CFG.probe_images), max_classes=5, memo=memo).screen(
        changed_pool.ids(), changed_pool.load
    )
    assert calls == ["t2", "t1"]
    # other settings or other probes: nothing is recalled
    stricter = replace(CFG, min_accuracy=0.75)
    PoolScreen(
        stricter, probe_images(val_split, CFG.probe_images), max_classes=5, memo=memo
    ).screen(["t0"], other.load)
    PoolScreen(CFG, probe_images(val_split, 30), max_classes=5, memo=memo).screen(
        ["t0"], other.load
    )
    assert calls == ["t2", "t1", "t0", "t0"]


def test_a_recalled_screening_equals_a_fresh_one(
    teachers: list[Teacher], val_split: ClassImages
) -> None:
    memo: dict[str, trust.ScreenedAlone] = {}
    pool = InMemoryTeachers(teachers)
    probes = probe_images(val_split, CFG.probe_images)
    PoolScreen(CFG, probes, max_classes=5, memo=memo).screen(pool.ids(), pool.load)
    fresh = PoolScreen(CFG, probes, max_classes=5)
    fresh.screen(pool.ids(), pool.load)
    recalled = PoolScreen(CFG, probes, max_classes=5, memo=memo)
    recalled.screen(pool.ids(), pool.load)
    for teacher_id in pool.ids():
        a, b = fresh.verdicts[teacher_id], recalled.verdicts[teacher_id]
        assert {k: v for k, v in a.items() if k != "seconds"} == {
            k: v for k, v in b.items() if k != "seconds"
        }
        assert torch.equal(
            fresh.fingerprints[teacher_id].logits, recalled.fingerprints[teacher_id].logits
        )


def test_disabled_screening_accepts_whatever_loads(
    teachers: list[Teacher], val_split: ClassImages
) -> None:
    class Broken(InMemoryTeachers):
        def ids(self) -> list[str]:
            return [*super().ids(), "gone"]

        def load(self, teacher_id: str) -> Teacher:
            if teacher_id == "gone":
                raise OSError("file vanished")
            return super().load(teacher_id)

    source = Broken([_copy(teachers[0], "a"), _copy(teachers[0], "b")])
    screen = _screen(val_split, replace(CFG, enabled=False))
    screen.screen(source.ids(), source.load)
    assert screen.accepted(source.ids()) == ["a", "b"] and screen.fingerprints == {}
    assert screen.verdicts["gone"]["reason"] == "cannot load: file vanished"


def test_trained_resnet_owner_passes_the_default_screening(tmp_path: Path) -> None:
    """Regression: 30 generator steps left honest ResNets below the Conv4-calibrated bar.

    A ResNet-10 trained to 100% on its classes recovered at accuracy 0.67-0.75 and
    confidence 0.61-0.83 under the old screening and was excluded, so FREE had no teacher.
    """
    train, val = class_images(9, 20, seed=0), class_images(6, 10, seed=1, name="val")
    resnet = trained_teacher(
        "resnet", train, [0, 1, 2], epochs=20, spec=tiny_spec(3, arch="resnet10", width=8)
    )
    shipped = FreeConfig.preset(DEFAULT_PRESET)
    config = replace(
        shipped,
        iterations=1,
        meta_learner=replace(shipped.meta_learner, width=8, image_size=16),
        eval=replace(shipped.eval, val_tasks=1, shots=(1,), q_query=2),
    )
    trainer = FreeTrainer(
        config, InMemoryTeachers([resnet]), val_data=val, test_data=None, work_dir=tmp_path
    )
    result = trainer.train(progress=False)
    assert result.excluded == {}
    assert result.screening["resnet"]["accepted"] and result.screening["resnet"]["accuracy"] == 1.0


def test_trainer_screens_without_training_and_checkpoints_the_fingerprints(
    teachers: list[Teacher], val_split: ClassImages, tmp_path: Path
) -> None:
    config = replace(FreeConfig.preset("test"), iterations=1)
    source = InMemoryTeachers([*teachers, _copy(teachers[1], "copy")])
    trainer = FreeTrainer(config, source, val_data=val_split, test_data=None, work_dir=tmp_path)
    verdicts = trainer.screen_pool()
    assert trainer.state.iteration == 0 and set(verdicts) == {"t0", "t1", "t2", "copy"}
    result = trainer.train(progress=False)
    assert result.screening.keys() == verdicts.keys()
    saved = load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    assert saved is not None and saved["screen"]["fingerprints"].keys() == verdicts.keys()
    resumed = FreeTrainer(config, source, val_data=val_split, test_data=None, work_dir=tmp_path)
    assert resumed.screen.fingerprints.keys() == verdicts.keys()
    assert resumed.screen_pool() == verdicts
