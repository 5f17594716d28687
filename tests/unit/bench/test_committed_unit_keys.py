"""The committed free_wins and poison units are keyed as today's code keys them (a resumed
bench keeps them), and keys do not move with what changes no figure (a disabled screening's
thresholds). Not checked: the accuracy bench's units and the quick poison units, which
predate the current presets and screening revision (a resumed bench measures them again)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from free_common.config import FreeConfig, ScreeningConfig
from scripts.bench import accuracy_presets, free_wins, poison
from scripts.bench.accuracy_presets import BENCH_MAX_LOGIT, config_key, key_form

RESULTS = Path(__file__).resolve().parents[3] / "scripts" / "results"


def _units(folder: str) -> list[Path]:
    return sorted((RESULTS / folder).rglob("*.json"))


def test_every_committed_free_wins_unit_carries_todays_key() -> None:
    units = _units("free_wins_units")
    assert units, "no committed free_wins units"
    for path in units:
        unit = json.loads(path.read_text())
        preset = free_wins.PRESETS[path.relative_to(RESULTS / "free_wins_units").parts[0]]
        key = free_wins.method_key(preset, unit["method"], unit["seed"], unit["pool"])
        assert key == unit["method_key"], path


def test_every_committed_unit_of_the_full_poison_bench_carries_todays_key() -> None:
    units = _units("poison_units/full")
    assert units, "no committed poison units"
    for path in units:
        unit = json.loads(path.read_text())
        preset_name, part = path.relative_to(RESULTS / "poison_units").parts[:2]
        defences = None if part == "detection" else unit["defences"] == "on"
        key = poison._config_key(poison.PRESETS[preset_name], unit["seed"], defences)
        assert key == unit["key"], path


def test_a_disabled_screenings_thresholds_do_not_enter_the_key() -> None:
    base = FreeConfig.preset("xkd-cpu")
    off = replace(base, screening=ScreeningConfig(enabled=False))
    moved = replace(off, screening=replace(off.screening, max_logit=5.0, steps=3))
    assert key_form(off) == key_form(moved) and config_key(off) == config_key(moved)
    on = replace(base, screening=ScreeningConfig())
    assert config_key(on) != config_key(replace(on, screening=ScreeningConfig(max_logit=5.0)))


def test_the_benchmarks_screen_at_their_recorded_limit_and_the_app_at_the_default() -> None:
    assert ScreeningConfig().max_logit == 20000.0 != BENCH_MAX_LOGIT
    wins = free_wins.free_config(free_wins.PRESETS["full"], "free", 0)
    assert wins.screening.enabled and wins.screening.max_logit == BENCH_MAX_LOGIT
    attacked = poison.PRESETS["full"].free_config(0, defences=True)
    assert attacked.screening.enabled and attacked.screening.max_logit == BENCH_MAX_LOGIT


@pytest.mark.parametrize("name", sorted(accuracy_presets.PRESETS))
def test_the_accuracy_presets_train_without_screening(name: str) -> None:
    """Their keys name the screening in its one disabled form."""
    assert not accuracy_presets.PRESETS[name].free.screening.enabled


def test_the_committed_benches_screen_without_the_trigger_scan_they_predate() -> None:
    """free_wins and the full poison bench keep the screening their units were measured
    with; the full-scan and quick poison presets screen as the app does."""
    scan = ScreeningConfig().trigger_steps
    assert scan > 0
    assert free_wins.free_config(free_wins.PRESETS["full"], "free", 0).screening.trigger_steps == 0
    assert poison.PRESETS["full"].free_config(0, defences=True).screening.trigger_steps == 0
    for name in ("full-scan", "quick"):
        config = poison.PRESETS[name].free_config(0, defences=True)
        assert config.screening.trigger_steps == scan
