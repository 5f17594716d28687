"""The free_wins bench's lever methods: the default with some pool distillation fields changed."""

from __future__ import annotations

from dataclasses import replace

import pytest

from free_common.config import FreeConfig
from free_common.free.meta_learner import learner_spec
from free_common.free.teachers import InMemoryTeachers
from scripts.bench.free_wins import (
    BASELINE_METHODS,
    POOL_KD_LEVERS,
    PRESETS,
    TRAINED,
    XKD_ITERATIONS,
    baseline_candidate,
    free_config,
    method_key,
)


def test_each_lever_changes_only_its_pool_kd_fields_and_its_key() -> None:
    preset = PRESETS["full"]
    for pool in ("single", "mixed"):
        default = free_config(preset, "free", 0, pool)
        for method, fields in POOL_KD_LEVERS.items():
            lever = free_config(preset, method, 0, pool)
            assert {k: getattr(lever.pool_kd, k) for k in fields} == fields
            assert replace(lever, pool_kd=default.pool_kd) == default
            assert method_key(preset, method, 0, pool) != method_key(preset, "free", 0, pool)


def test_the_100_teacher_pools_keep_the_settings_their_units_were_measured_at() -> None:
    preset = PRESETS["full"]
    for method, name in TRAINED.items():
        config = free_config(preset, method, 0)
        if name == "xkd-cpu":  # the preset runs fewer on the main job's 20-owner pools
            assert config.iterations == XKD_ITERATIONS != FreeConfig.preset(name).iterations
            assert config.pool_kd.learner_precision == "float32"
        else:
            assert config.iterations == FreeConfig.preset(name).iterations


def test_ten_teachers_give_each_of_two_domains_five() -> None:
    config = free_config(PRESETS["full"], "free_kd10", 1, "mixed")
    assert config.pool_kd.teachers == 10
    assert config.pool_kd.choose == "per-domain"
    assert config.seed == 1


def test_only_the_pool_s_free_models_are_built_as_baselines() -> None:
    spec = learner_spec(free_config(PRESETS["full"], "free", 0).meta_learner)
    empty = InMemoryTeachers([])
    assert baseline_candidate("random", spec, 0, "single", None, empty).name == "Random"  # type: ignore[arg-type]
    for method in ("free", "ceiling", "scratch"):
        assert method not in BASELINE_METHODS
        with pytest.raises(ValueError, match="is not one of"):
            baseline_candidate(method, spec, 0, "single", None, empty)  # type: ignore[arg-type]
