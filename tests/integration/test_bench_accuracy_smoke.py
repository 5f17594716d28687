"""The accuracy benchmark end to end on its ``smoke`` preset (synthetic data)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from free_common.free.meta_learner import learner_spec
from free_common.models import build_model
from scripts.bench import accuracy as bench_accuracy

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_accuracy_smoke_writes_every_method(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results"
    code = bench_accuracy.main(
        ["--preset", "smoke", "--out", str(out), "--cache-dir", str(tmp_path / "pools")]
    )
    assert code == 0
    report = json.loads((out / "accuracy.json").read_text())
    assert [s["name"] for s in report["settings"]] == ["single", "multi"]
    for setting in report["settings"]:
        for shot in ("1", "5"):
            row = setting["results"][shot]
            assert set(bench_accuracy.METHODS) <= set(row)
            for method in bench_accuracy.METHODS:
                assert 0.0 <= row[method]["mean"] <= 1.0
                assert len(row[method]["per_seed"]) == len(report["seeds"])
            assert "free_minus_best_baseline_points" in row["_summary"]
    assert report["settings"][0]["average_teachers"] >= 1
    for name in ("accuracy.md", "accuracy_val_curves.png", "accuracy_recovered_images.png"):
        assert (out / name).stat().st_size > 0
    printed = capsys.readouterr().out
    assert "FREE − best data-free baseline" in printed
    assert "1-shot (rates tuned on meta-val): FREE" in printed


def test_every_method_is_also_tested_at_a_rate_chosen_on_meta_val_and_its_weights_kept(
    tmp_path: Path,
) -> None:
    units = tmp_path / "units"
    args = ["--preset", "smoke", "--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "p")]
    assert bench_accuracy.main([*args, "--units", str(units), "--settings", "single"]) == 0
    preset = bench_accuracy.PRESETS["smoke"]
    unit = json.loads((units / "single" / "seed0" / "unit.json").read_text())
    weights = torch.load(units / "single" / "seed0" / "models.pt", weights_only=True)
    spec = learner_spec(preset.free.meta_learner)
    for method in bench_accuracy.METHODS:
        for shot in ("1", "5"):
            chosen = unit["tuned"]["lrs"][method][shot]
            assert chosen["lr"] in preset.finetune_lrs
            assert chosen["val"][str(chosen["lr"])] == max(chosen["val"].values())
            tuned = unit["tuned"]["accuracies"][method][shot]
            assert len(tuned) == preset.test_tasks
            if chosen["lr"] == bench_accuracy.PUBLISHED_LR:  # same tasks, same rate
                assert tuned == unit["accuracies"][method][shot]
            build_model(spec, batch_stats=True).load_state_dict(weights[method][int(shot)])
    report = json.loads((tmp_path / "r" / "accuracy.json").read_text())
    tuned = report["settings"][0]["tuned"]
    assert tuned["seeds"] == [0] and set(tuned["lrs"]["0"]) == set(bench_accuracy.METHODS)
    assert "each method fine-tuned at its own rate" in (tmp_path / "r" / "accuracy.md").read_text()


def test_finished_units_are_reused_by_a_second_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--preset", "smoke", "--out", str(tmp_path / "a"), "--cache-dir", str(tmp_path / "p")]
    assert bench_accuracy.main(args) == 0
    first = json.loads((tmp_path / "a" / "accuracy.json").read_text())

    def must_not_train(*_: object, **__: object) -> None:
        raise AssertionError("a finished (setting, seed) unit was trained again")

    monkeypatch.setattr(bench_accuracy, "_run_unit", must_not_train)
    monkeypatch.setattr(bench_accuracy, "build_pool", must_not_train)  # no pool needed
    again = ["--preset", "smoke", "--out", str(tmp_path / "b"), "--cache-dir", str(tmp_path / "p")]
    assert bench_accuracy.main(again) == 0
    second = json.loads((tmp_path / "b" / "accuracy.json").read_text())
    for a, b in zip(first["settings"], second["settings"], strict=True):
        assert a["results"] == b["results"]
    assert (tmp_path / "b" / "accuracy_recovered_images.png").stat().st_size > 0


def test_seeds_outside_the_preset_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        bench_accuracy.main(["--preset", "smoke", "--seeds", "7", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "the preset's seeds are [0]" in capsys.readouterr().err


def test_units_of_another_configuration_are_measured_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    units = tmp_path / "units"
    args = ["--preset", "smoke", "--out", str(tmp_path / "a"), "--cache-dir", str(tmp_path / "p")]
    assert bench_accuracy.main([*args, "--units", str(units)]) == 0
    saved = sorted(units.glob("*/seed0/unit.json"))
    assert [p.parent.parent.name for p in saved] == ["multi", "single"]
    stale = json.loads(saved[0].read_text())
    base = bench_accuracy.PRESETS["smoke"].free
    assert stale["free_config"] == base.to_dict()  # a unit says what it was measured with
    stale["config_key"] = "another"
    saved[0].write_text(json.dumps(stale))
    trained: list[str] = []
    real = bench_accuracy._run_unit

    def counting(*a: object, **k: object) -> object:
        trained.append(str(a[1]))
        return real(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(bench_accuracy, "_run_unit", counting)
    assert bench_accuracy.main([*args, "--units", str(units)]) == 0
    assert trained == ["multi"]


def test_one_setting_only_says_what_is_missing(tmp_path: Path) -> None:
    out = tmp_path / "r"
    args = ["--preset", "smoke", "--out", str(out), "--cache-dir", str(tmp_path / "p")]
    assert bench_accuracy.main([*args, "--settings", "single"]) == 0
    report = json.loads((out / "accuracy.json").read_text())
    assert [s["name"] for s in report["settings"]] == ["single"]
    assert "PARTIAL: not run yet: the multi pool setting(s)." in (out / "accuracy.md").read_text()
    with pytest.raises(SystemExit):
        bench_accuracy.main([*args, "--settings", "nope"])


def test_the_ceiling_is_measured_once_per_seed_across_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    units = tmp_path / "units"
    args = ["--preset", "smoke", "--cache-dir", str(tmp_path / "p"), "--units", str(units)]
    assert bench_accuracy.main([*args, "--out", str(tmp_path / "a"), "--settings", "single"]) == 0

    def must_not_measure(*_: object, **__: object) -> None:
        raise AssertionError("the ceiling was measured again for another pool")

    monkeypatch.setattr(bench_accuracy, "_measure_ceiling", must_not_measure)
    assert bench_accuracy.main([*args, "--out", str(tmp_path / "b"), "--settings", "multi"]) == 0
    single = json.loads((units / "single" / "seed0" / "unit.json").read_text())
    multi = json.loads((units / "multi" / "seed0" / "unit.json").read_text())
    assert multi["accuracies"]["maml"] == single["accuracies"]["maml"]
    assert multi["training"]["maml"] == single["training"]["maml"]
    assert multi["ceiling_key"] == bench_accuracy.ceiling_key(bench_accuracy.PRESETS["smoke"])


def _measured_before_the_tuned_protocol(unit: dict[str, Any]) -> None:
    del unit["tuned"]


def _of_other_sizes(unit: dict[str, Any]) -> None:
    unit["ceiling_key"] = "other-sizes"


@pytest.mark.parametrize("stale", [_measured_before_the_tuned_protocol, _of_other_sizes])
def test_a_ceiling_that_cannot_be_reused_is_measured_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stale: Callable[[dict[str, Any]], None]
) -> None:
    units = tmp_path / "units"
    args = ["--preset", "smoke", "--cache-dir", str(tmp_path / "p"), "--units", str(units)]
    assert bench_accuracy.main([*args, "--out", str(tmp_path / "a"), "--settings", "single"]) == 0
    path = units / "single" / "seed0" / "unit.json"
    unit = json.loads(path.read_text())
    stale(unit)
    path.write_text(json.dumps(unit))
    measured: list[int] = []
    real = bench_accuracy._measure_ceiling

    def counting(*a: object, **k: object) -> object:
        measured.append(int(a[2]))  # type: ignore[call-overload]
        return real(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(bench_accuracy, "_measure_ceiling", counting)
    assert bench_accuracy.main([*args, "--out", str(tmp_path / "b"), "--settings", "multi"]) == 0
    assert measured == [0]
    report = json.loads((tmp_path / "b" / "accuracy.json").read_text())
    assert report["settings"][0]["tuned"]["seeds"] == [0]


def test_finished_only_reports_the_finished_units_and_trains_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    units = tmp_path / "units"
    args = ["--preset", "smoke", "--cache-dir", str(tmp_path / "p"), "--units", str(units)]
    out = tmp_path / "none"
    assert bench_accuracy.main([*args, "--out", str(out), "--finished-only"]) == 2
    assert "no finished unit" in capsys.readouterr().err
    assert not (out / "accuracy.json").exists()
    assert bench_accuracy.main([*args, "--out", str(tmp_path / "a"), "--settings", "single"]) == 0

    def must_not_train(*_: object, **__: object) -> None:
        raise AssertionError("--finished-only trained a unit")

    monkeypatch.setattr(bench_accuracy, "_run_unit", must_not_train)
    monkeypatch.setattr(bench_accuracy, "build_pool", must_not_train)
    monkeypatch.setattr(bench_accuracy, "_measure_ceiling", must_not_train)
    out = tmp_path / "b"
    assert bench_accuracy.main([*args, "--out", str(out), "--finished-only"]) == 0
    report = json.loads((out / "accuracy.json").read_text())
    assert [(s["name"], s["seeds"]) for s in report["settings"]] == [("single", [0])]
    first = json.loads((tmp_path / "a" / "accuracy.json").read_text())
    assert report["settings"][0]["results"] == first["settings"][0]["results"]
    assert "PARTIAL: not run yet: the multi pool setting(s)." in (out / "accuracy.md").read_text()


def test_units_saved_before_the_tuned_protocol_are_measured_again_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    units = tmp_path / "units"
    args = ["--preset", "smoke", "--cache-dir", str(tmp_path / "p"), "--units", str(units)]
    args += ["--settings", "single"]
    assert bench_accuracy.main([*args, "--out", str(tmp_path / "a")]) == 0
    path = units / "single" / "seed0" / "unit.json"
    unit = json.loads(path.read_text())
    del unit["tuned"]
    path.write_text(json.dumps(unit))
    assert bench_accuracy.main([*args, "--out", str(tmp_path / "b")]) == 0  # reused as it is
    assert "tuned" not in json.loads(path.read_text())
    with pytest.raises(SystemExit):
        bench_accuracy.main([*args, "--finished-only", "--remeasure-untuned"])
    assert "cannot be combined" in capsys.readouterr().err
    assert bench_accuracy.main([*args, "--out", str(tmp_path / "c"), "--remeasure-untuned"]) == 0
    again = json.loads(path.read_text())
    assert set(again["tuned"]["accuracies"]) == set(bench_accuracy.METHODS)
    # seeded training and evaluation: the published-protocol figures come out the same
    changed = again["remeasured"]
    assert set(changed) == set(bench_accuracy.METHODS)
    assert all(n == 0 for by_shot in changed.values() for n in by_shot.values())
    assert again["accuracies"] == unit["accuracies"]
