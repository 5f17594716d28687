"""Pool composition and the summaries of ``scripts.bench.poison`` (no training)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from free_common.models import ModelSpec
from scripts.bench import poison as bench_poison
from scripts.bench import poison_attacks as attacks
from scripts.bench.teacher_pool import synthetic_split

SPEC = ModelSpec("conv4", 1, 32, 5, 4)
PRESET = replace(bench_poison.PRESETS["smoke"], levels=(0.0, 0.25, 0.5))


def _fake_attack(
    kind: str,
    victim: attacks.Model,
    honest: list[attacks.Model],
    *_: Any,
) -> attacks.Model:
    source = honest[0].model_id if kind == "free_rider" else victim.model_id
    return attacks.Model(f"{victim.model_id}-{kind}", SPEC, {}, victim.classes, kind, source)


@pytest.fixture
def members(monkeypatch: pytest.MonkeyPatch) -> list[attacks.Model]:
    monkeypatch.setattr(bench_poison, "_attack", _fake_attack)
    return [
        attacks.Model(f"t{i:02d}", SPEC, {}, (i, i + 1, i + 2, i + 3, i + 4)) for i in range(24)
    ]


def test_levels_are_nested_and_cycle_through_the_attacks(members: list[attacks.Model]) -> None:
    data = synthetic_split("train")
    built: dict[int, attacks.Model] = {}
    pools = {
        level: bench_poison.compose_pool(members, data, level, PRESET, seed=3, built=built)
        for level in PRESET.levels
    }
    bad = {level: {m.model_id for m in pool if m.kind != "honest"} for level, pool in pools.items()}
    assert [len(bad[level]) for level in PRESET.levels] == [0, 6, 12]
    assert bad[0.25] < bad[0.5]
    assert Counter(m.kind for m in pools[0.5] if m.kind != "honest") == dict.fromkeys(
        attacks.ATTACKS, 2
    )
    assert all(len(pool) == len(members) for pool in pools.values())
    assert {m.model_id for m in pools[0.0]} == {m.model_id for m in members}
    again = bench_poison.compose_pool(members, data, 0.5, PRESET, seed=3)
    assert [m.model_id for m in again] == [m.model_id for m in pools[0.5]]


def test_copies_follow_their_never_attacked_source(members: list[attacks.Model]) -> None:
    data = synthetic_split("train")
    for seed in range(4):
        pool = bench_poison.compose_pool(members, data, 0.5, PRESET, seed=seed)
        ids = [m.model_id for m in pool]
        attacked_sources = {m.source for m in pool if m.kind not in ("honest", "free_rider")}
        for i, m in enumerate(pool):
            if m.kind == "free_rider":
                assert ids.index(m.source) < i and m.source not in attacked_sources


def _row(
    kind: str, accepted: bool, failed: tuple[str, ...] = (), teacher: str = "t"
) -> dict[str, Any]:
    return {
        "teacher": teacher,
        "arch": "conv4",
        "kind": kind,
        "accepted": accepted,
        "reason": "",
        "failed": list(failed),
        "suspected_by": [],
        "seconds": 0.5,
    }


def test_detection_summary_rates_and_false_positives() -> None:
    rows = [_row("honest", True)] * 98 + [_row("honest", False, ("recovery",))] * 2
    rows += [_row("free_rider", False, ("near_duplicate",))] * 9 + [_row("free_rider", True)]
    rows += [_row("label_permuted", False, ("label_agreement", "near_duplicate"))] * 4
    summary = bench_poison.detection_summary([{"rows": rows}])
    assert summary["false_positive_rate"] == pytest.approx(0.02)
    assert summary["by_attack"]["free_rider"]["rate"] == pytest.approx(0.9)
    assert summary["by_attack"]["label_permuted"]["rate"] == 1.0
    assert summary["by_check"]["near_duplicate"]["free_rider"] == pytest.approx(0.9)
    assert summary["by_check"]["near_duplicate"]["label_permuted"] == 1.0
    assert summary["by_check"]["recovery"]["false_positives"] == 2
    assert summary["goals"]["met"]
    worse = bench_poison.detection_summary([{"rows": [*rows, _row("honest", False)]}])
    assert not worse["goals"]["met"]


def test_a_failed_training_is_reported_apart_not_as_a_false_positive() -> None:
    rows = [_row("honest", True)] * 50 + [_row("honest", False, ("recovery",), "t022")] * 3
    summary = bench_poison.detection_summary([{"rows": rows}], {"t022": 0.2, "t999": 0.45})
    assert (summary["honest_teachers"], summary["honest_excluded"]) == (50, 0)
    assert summary["by_check"]["recovery"]["false_positives"] == 0
    assert summary["goals"]["met"]
    assert list(summary["broken"]) == ["t022"]  # t999 was never screened
    assert summary["broken"]["t022"]["excluded"] == 3
    assert summary["broken"]["t022"]["screened"] == 3
    counted = bench_poison.detection_summary([{"rows": rows}])
    assert counted["honest_excluded"] == 3 and not counted["goals"]["met"]
    report = {
        "command": "c",
        "note": "n",
        "pool": {"teachers": 53, "archs": ["conv4"], "vocabulary": 30},
        "levels": [0.0],
        "seeds": [0],
        "attacks": [],
        "detection": summary,
        "accuracy": None,
    }
    text = bench_poison.markdown(report, "poison_x")
    assert "t022 (hold-out accuracy 0.20): excluded in 3 of 3 pools" in text


def _unit(level: float, defences: str, seed: int, one_shot: float) -> dict[str, Any]:
    accuracies = np.full(4, one_shot).tolist()
    return {
        "level": level,
        "defences": defences,
        "seed": seed,
        "shots": {"1": {"mean": one_shot, "accuracies": accuracies}},
        "excluded": 3,
        "poisoned_draw_share": 0.1,
    }


def test_accuracy_summary_losses_goals_and_failed_units() -> None:
    units = [
        _unit(0.0, "on", 0, 0.60),
        _unit(0.0, "on", 1, 0.62),
        _unit(0.2, "on", 0, 0.605),
        _unit(0.2, "on", 1, 0.60),
        _unit(0.4, "on", 0, 0.50),
        _unit(0.0, "off", 0, 0.61),
        {"level": 0.4, "defences": "off", "seed": 0, "error": "no usable teacher"},
    ]
    summary = bench_poison.accuracy_summary(units, shots=(1,))
    table = summary["table"]
    assert table["on/0.2"]["1"]["loss_points"] == pytest.approx(0.75)
    assert table["on/0.4"]["1"]["loss_points"] == pytest.approx(11.0)
    assert summary["goals"]["0.2"]["met"] and not summary["goals"]["0.4"]["met"]
    assert summary["failed"] == [
        {"level": 0.4, "defences": "off", "seed": 0, "error": "no usable teacher"}
    ]
    assert "off/0.4" not in table
