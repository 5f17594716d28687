"""run_federation end to end without Flower: rounds, real FREE (test preset), resume."""

import json
from pathlib import Path

import numpy as np
import pytest

from free_common.config import DEFAULT_PRESET, FreeConfig
from free_common.data.base import ClassImages
from free_common.run_config import RunConfigError
from server.federation import (
    FederationSettings,
    SettingsError,
    free_config_from_run_config,
    key_registry_for,
    make_finisher,
    run_federation,
)
from server.round import NotEnoughReplies, Reply
from tests.app_config import pyproject_run_config

from .helpers import SECRET, make_submission, tiny_spec


def _split(name: str, classes: int = 6, per_class: int = 6) -> ClassImages:
    rng = np.random.default_rng(len(name))
    images = rng.integers(0, 256, size=(classes * per_class, 1, 16, 16), dtype=np.uint8)
    labels = np.repeat(np.arange(classes, dtype=np.int64), per_class)
    return ClassImages(name, images, labels, tuple(f"c{i}" for i in range(classes)))


def _collector(calls: list[int], fail_round: int = 0):  # type: ignore[no-untyped-def]
    def collect(r: int) -> tuple[dict[str, int], list[Reply]]:
        calls.append(r)
        sent = {f"r{r}m{i}": 10 * r + i for i in range(4)}
        if r == fail_round:
            return sent, [Reply(f"r{r}m0", error=(2, "boom"))]
        replies = [
            Reply(
                f"r{r}m{i}",
                submission=make_submission(
                    f"owner-{i:03d}",
                    seed=100 * r + i,
                    spec=tiny_spec(num_classes=3 if i < 2 else 5),
                ),
            )
            for i in range(3)
        ]
        replies.append(Reply(f"r{r}m3", error=(5, "node unavailable")))
        return sent, replies

    return collect


def test_rounds_free_report_and_resume(tmp_path: Path) -> None:
    settings = FederationSettings(
        num_rounds=2, min_replies=2, demo_key_secret=SECRET, export=False, compare_val_tasks=2
    )
    config = FreeConfig.preset("test")
    val, test = _split("val"), _split("test")
    calls: list[int] = []
    summary = run_federation(
        settings,
        config,
        _collector(calls),
        run_dir=tmp_path,
        val_data=val,
        keys=key_registry_for(settings),
        finish=make_finisher(tmp_path, settings, config, val, test, 0.0),
        progress=False,
    )
    assert calls == [1, 2]
    assert summary["pool"]["models"] == 6
    methods = ["FREE", "Random", "Average", "Best owner"]
    rows = [(r["protocol"], r["method"]) for r in summary["rows"]]
    assert rows == [("tuned", m) for m in methods] + [("proto", m) for m in methods]
    tuned = {r["method"]: r for r in summary["rows"] if r["protocol"] == "tuned"}
    assert all(r["shots"] for r in summary["rows"])
    # two 5-class owners share the learner's spec (averaged); all six its backbone
    assert tuned["Average"]["note"] == "mean of 2 conv4 owners"
    assert tuned["Best owner"]["note"].endswith("best of 6 conv4 owners on meta-val")
    assert all(" head, lr " in v for v in tuned["FREE"]["settings"].values())
    verdict = summary["verdict"]
    assert set(verdict["meta_val"]) == set(methods)
    assert verdict["best"] == max(verdict["meta_val"], key=verdict["meta_val"].get)
    assert verdict["line"] in Path(summary["report"]["markdown"]).read_text()
    report = json.loads(Path(summary["report"]["json"]).read_text())
    owners = report["owners"]
    assert len(owners) == 6 and {o["status"] for o in owners} == {"accepted"}
    assert sum(o["sampled"] for o in owners) == config.iterations * config.teachers_per_iteration
    assert "## Owners" in Path(summary["report"]["markdown"]).read_text()
    assert (tmp_path / "free" / "checkpoints" / "latest.pt").exists()
    # a restarted server asks nobody again and resumes from the checkpoint
    again = run_federation(
        settings,
        config,
        _collector(calls),
        run_dir=tmp_path,
        val_data=val,
        keys=key_registry_for(settings),
        progress=False,
    )
    assert calls == [1, 2]
    assert again["pool"]["models"] == 6


def test_too_few_replies_stop_the_run(tmp_path: Path) -> None:
    settings = FederationSettings(num_rounds=1, min_replies=1)
    with pytest.raises(NotEnoughReplies, match="0/4 accepted"):
        run_federation(
            settings,
            FreeConfig.preset("test"),
            _collector([], fail_round=1),
            run_dir=tmp_path,
            val_data=_split("val"),
            keys=None,
            progress=False,
        )


def test_settings_from_run_config() -> None:
    s = FederationSettings.from_run_config({"fed.num-rounds": 3, "fed.round-timeout-s": 10})
    assert s.num_rounds == 3 and s.round_timeout_s == 10.0
    with pytest.raises(SettingsError):
        FederationSettings.from_run_config({"fed.num-rounds": "3"})
    with pytest.raises(SettingsError):
        FederationSettings.from_run_config({"fed.min-replies": 0})
    cfg = free_config_from_run_config(
        {"preset": "test", "free.iterations": -1, "free.eval.shots": ""}
    )
    test = FreeConfig.preset("test")
    assert cfg == test
    cfg = free_config_from_run_config({"preset": "test", "free.iterations": 7})
    assert cfg.iterations == 7


def test_app_config_defaults_are_the_preset_and_the_alignment_step_can_be_overridden() -> None:
    """`flwr run --run-config` only takes keys the app declares: the SGD alignment option
    (README, alignment study) is declared, and its placeholders leave the preset alone."""
    rc = pyproject_run_config()
    preset = FreeConfig.preset(DEFAULT_PRESET)
    assert free_config_from_run_config(rc) == preset
    rc.update(
        {
            "free.meta-learner.inner-optimizer": "sgd",
            "free.meta-learner.inner-lr": 0.5,
            "free.meta-learner.reptile-scale": 2.0,
        }
    )
    learner = free_config_from_run_config(rc).meta_learner
    assert (learner.inner_optimizer, learner.inner_lr, learner.reptile_scale) == ("sgd", 0.5, 2.0)


def test_the_best_teacher_start_the_outer_rate_and_the_bn_prior_are_run_config_keys() -> None:
    """The start from the best owner's backbone is reachable from `flwr run --run-config`."""
    rc = pyproject_run_config()
    rc.update({"free.meta-learner.init": "best_teacher", "free.meta-learner.outer-lr": 1e-4})
    rc["free.inversion.bn-weight"] = 0.5  # the DeepInversion prior on the teachers' BN statistics
    config = free_config_from_run_config(rc)
    learner = config.meta_learner
    assert (learner.init, learner.outer_lr, config.inversion.bn_weight) == (
        "best_teacher",
        1e-4,
        0.5,
    )
    rc["free.meta-learner.init"] = "owner"
    with pytest.raises(RunConfigError, match="meta_learner.init must be"):
        free_config_from_run_config(rc)
