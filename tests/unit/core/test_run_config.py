"""One reader and one place for each run-config default (free_common.run_config)."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from client.owner import TrainSettings, prepare_owner
from free_common.config import DEFAULT_PRESET, FreeConfig
from free_common.run_config import DEFAULTS, KEYS, RunConfig, RunConfigError
from server.federation import FederationSettings, SettingsError
from tests.app_config import pyproject_run_config


def test_pyproject_declares_exactly_the_keys_and_defaults_of_the_code() -> None:
    declared = pyproject_run_config()
    assert list(declared) == list(KEYS)
    for name, value in declared.items():
        default = KEYS[name].default
        assert (value, type(value)) == (default, type(default)), name


def test_settings_dataclasses_take_their_defaults_from_the_one_table() -> None:
    """The dataclass defaults once disagreed with pyproject (fed.demo-key-secret was "")."""
    assert FederationSettings() == FederationSettings.from_run_config({})
    assert FederationSettings().demo_key_secret == KEYS["fed.demo-key-secret"].default
    assert TrainSettings() == TrainSettings.from_run_config({})
    assert FederationSettings.from_run_config(pyproject_run_config()) == FederationSettings()
    app = RunConfig(pyproject_run_config()).free_config()
    preset = FreeConfig.preset(DEFAULT_PRESET)
    assert app == preset


def test_a_simulated_owner_without_arch_mix_takes_the_declared_mix() -> None:
    """client/owner.py once fell back to "conv4" instead of the declared mix."""
    archs = [
        prepare_owner({"partition-id": p, "num-partitions": 4}, {}).spec.arch for p in range(4)
    ]
    assert archs == ["conv4", "resnet10", "resnet18", "conv4"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("fed.num-rounds", "3"),
        ("fed.num-rounds", 2.5),
        ("fed.num-rounds", True),
        ("export.enabled", 1),
        ("data.val", 3),
        ("fed.round-timeout-s", "10"),
    ],
)
def test_values_of_the_wrong_type_are_refused_with_the_key_named(key: str, value: object) -> None:
    with pytest.raises(RunConfigError, match=key):
        RunConfig({key: value})


def test_numbers_widen_unknown_keys_are_refused_and_free_keys_pass_to_the_preset() -> None:
    assert RunConfig({"fed.round-timeout-s": 10}).get_float("fed.round-timeout-s") == 10.0
    with pytest.raises(RunConfigError, match="unknown run-config key.*fed.num-round\\b"):
        RunConfig({"fed.num-round": 2})
    with pytest.raises(RunConfigError, match="removed run-config key.*compare.domain-tasks.*drop"):
        RunConfig({"compare.domain-tasks": 300})
    with pytest.raises(RunConfigError, match="free.inversion.nope"):
        RunConfig({"free.inversion.nope": 1}).free_config()
    config = RunConfig({"preset": "test", "free.iterations": 7, "free.eval.shots": ""})
    test = FreeConfig.preset("test")
    assert config.free_config() == replace(test, iterations=7)
    lower = RunConfig({"preset": "test", "free.screening.max-logit": 1000})
    assert lower.free_config() == replace(test, screening=replace(test.screening, max_logit=1000))
    with pytest.raises(RunConfigError, match="not a declared int"):
        DEFAULTS.get_int("data.val")


def test_the_meta_learner_input_follows_the_data_or_the_keys() -> None:
    def learner(**rc: object) -> tuple[int, int, int, int]:
        c = RunConfig(rc).free_config()
        ml, inv = c.meta_learner, c.inversion
        return ml.channels, ml.image_size, inv.channels, inv.image_size

    assert learner() == (1, 32, 1, 32)  # glyphs, the cpu preset's side
    assert learner(preset="test") == (1, 16, 1, 16)
    folder = {"data.test": "folder:/data/held-out"}
    assert learner(**folder) == (3, 32, 3, 32)  # a folder counts as RGB
    assert learner(**folder, **{"data.channels": 1, "data.image-size": 48}) == (1, 48, 1, 48)
    none = {"data.val": "none", "data.test": "none", "data.train": "folder:/x"}
    assert learner(**none) == (3, 32, 3, 32)  # the first source that is not none
    with pytest.raises(RunConfigError, match="data.channels must be 0"):
        learner(**{"data.channels": 2})
    with pytest.raises(RunConfigError, match="data.image-size = 30.*multiple of 4"):
        learner(**{"data.image-size": 30})
    with pytest.raises(RunConfigError, match="data.image-size must be 0"):
        learner(**{"data.image-size": -4})
    with pytest.raises(RunConfigError, match="conv4 meta-learner cannot take 1x12x12 input"):
        learner(**{"data.image-size": 12})  # a multiple of 4, but four 2x2 pools need 16


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("imagenet", "unknown dataset 'imagenet'"),
        ("folder", "folder:<absolute path"),
        ("folder:", "empty path"),
        ("folder:relative/dir", "must be absolute"),
        ("glyphs:/tmp/g.npz", "embedded in the package and takes no path"),
        ("none:/x", "'none' takes no path"),
        ("glyphs+none", "'none' cannot be part of a mix"),
        ("glyphs+glyphs", "names each source once"),
        ("glyphs+", "empty source"),
        ("glyphs+imagenet", "unknown dataset 'imagenet'"),
        ("glyphs+folder:rel", "must be absolute"),
    ],
)
def test_bad_data_sources_are_named(text: str, message: str) -> None:
    with pytest.raises(RunConfigError, match=message):
        RunConfig({"data.val": text}).source("data.val")
    with pytest.raises(SettingsError, match=re.escape(f"data.val = {text!r}")):
        FederationSettings.from_run_config({"data.val": text})


def test_run_main_merges_its_run_config_with_the_users() -> None:
    """flwr merges two --run-config options table by table: the user's data.* keys dropped
    run_main's data.assets-dir (and FAST's fed.* keys its fed.min-nodes)."""
    from flwr.common.config import parse_config_args

    from scripts.merge_run_config import merge_run_configs

    ours = 'data.assets-dir="/a b/assets" out.dir="/o" fed.min-nodes=20'
    users = 'data.val="icons" fed.arch-mix="conv4" out.dir="/mine"'
    two_options = parse_config_args([ours, users])
    assert "data.assets-dir" not in two_options and "fed.min-nodes" not in two_options
    one = parse_config_args([merge_run_configs(ours, users)])
    assert one == {
        "data.assets-dir": "/a b/assets",
        "out.dir": "/mine",
        "fed.min-nodes": 20,
        "data.val": "icons",
        "fed.arch-mix": "conv4",
    }
    assert merge_run_configs() == "" and merge_run_configs("", "seed=1 seed=2") == "seed=2"
