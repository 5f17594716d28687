"""The alignment study's arms and report (no training)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from free_common.config import FreeConfig
from scripts.studies import alignment as study_alignment
from scripts.studies.alignment import ARMS, arm_config, markdown


def test_arms_set_the_meta_learner_step_and_the_study_seed() -> None:
    base = FreeConfig.preset("test")
    published = arm_config(base, ARMS["published"]).meta_learner
    assert (published.alignment, published.inner_optimizer) == (True, "adam")
    assert (published.inner_lr, published.reptile_scale) == (1e-3, 67.0)
    assert arm_config(base, ARMS["joint"]).meta_learner.alignment is False
    assert arm_config(base, ARMS["joint"]).seed == study_alignment.SEED


@pytest.mark.parametrize("name", [n for n in ARMS if n.startswith("sgd_")])
def test_sgd_arms_keep_the_joint_gradient_scale(name: str) -> None:
    """inner_lr * reptile_scale = 1: the outer gradient is sum_i g_i + alignment term."""
    learner = arm_config(FreeConfig.preset("test"), ARMS[name]).meta_learner
    assert learner.inner_optimizer == "sgd"
    assert learner.inner_lr * learner.reptile_scale == pytest.approx(1.0)


def _report() -> dict[str, object]:
    direction = {"cos_joint": 0.5, "cos_sign": 0.9, "rms": 0.1}
    return {
        "budget": "full",
        "iterations": 30,
        "setting": "single",
        "teachers": 100,
        "seed": 0,
        "test_tasks": 600,
        "draws": 8,
        "teachers_per_iteration": 4,
        "shots": [1, 5],
        "arms": {
            "published": {"label": "published", "best_iteration": 20, "seconds": 120.0},
            "sgd_0.5": {"label": "big", "diverged": "NaN at iteration 3"},
        },
        "results": {
            "published": {"1": {"mean": 0.6, "ci95": 0.01}, "5": {"mean": 0.8, "ci95": 0.01}},
            "sgd_0.5": {"diverged": "NaN at iteration 3"},
        },
        "directions": {"published": direction, "sgd_0.5": direction},
        "bench_match": {"published": True},
        "references": {
            "average": {"1": {"mean": 0.7, "ci95": 0.02}, "5": {"mean": 0.85, "ci95": 0.01}}
        },
    }


def test_markdown_reports_a_diverged_arm_and_the_bench_match() -> None:
    text = markdown(_report())
    assert "| published | 60.00 ± 1.00 | 80.00 ± 1.00 | 20 | 120 | 0.500 | 0.900 |" in text
    assert "| big | diverged | diverged |" in text
    assert "published: identical" in text
    assert "| Average (FedAvg) (accuracy bench, same tasks) | 70.00 ± 2.00 | 85.00 ± 1.00 |" in text


def _bench(config: FreeConfig) -> dict[str, object]:
    training = {"seconds": 9.0, "best_iteration": 4, "best_val": 0.7, "val_curve": {}}
    return {
        "free_config": config.to_dict(),
        "accuracies": {"free": {"1": [0.5, 0.7]}, "no_alignment": {"1": [0.6, 0.6]}},
        "training": {"free": training, "no_alignment": training},
    }


def test_bench_arms_come_from_a_bench_unit_that_trained_the_same_configuration() -> None:
    base = FreeConfig.preset("test")
    unit = study_alignment._from_bench(_bench(base), "published", base)
    assert unit is not None
    assert unit["accuracies"] == {"1": [0.5, 0.7]}
    assert unit["source"] == "accuracy bench unit"
    joint = study_alignment._from_bench(_bench(base), "joint", base)
    assert joint is not None and joint["accuracies"] == {"1": [0.6, 0.6]}
    assert study_alignment._from_bench(_bench(base), "sgd_0.1", base) is None
    assert study_alignment._from_bench(None, "published", base) is None


def test_a_bench_unit_of_another_configuration_is_not_taken() -> None:
    base = FreeConfig.preset("test")
    other = replace(base, iterations=base.iterations + 1)
    assert study_alignment._from_bench(_bench(other), "published", base) is None
    # the bench's base step differs from the arm's: its FREE row is not the published arm
    sgd = replace(base, meta_learner=replace(base.meta_learner, inner_optimizer="sgd"))
    assert study_alignment._from_bench(_bench(sgd), "published", base) is None


def test_imported_arms_are_named_and_not_counted_as_reproduced() -> None:
    report = _report()
    report["arms"]["published"]["source"] = "accuracy bench unit"  # type: ignore[index]
    report["bench_match"] = {}
    text = markdown(report)
    assert "| published (from the accuracy bench) |" in text
    assert "Taken from the accuracy bench's unit (same configuration and seed" in text
    base = FreeConfig.preset("test")
    arms = {"published": {"source": "accuracy bench unit", "accuracies": {"1": [0.5, 0.7]}}}
    assert study_alignment._bench_match(_bench(base), arms, base) == {}


def test_bench_match_compares_only_arms_the_bench_ran_with_the_same_configuration() -> None:
    base = FreeConfig.preset("test")
    arms = {
        "published": {"accuracies": {"1": [0.5, 0.7]}},
        "joint": {"accuracies": {"1": [0.6, 0.5]}},
        "sgd_0.1": {"accuracies": {"1": [0.9, 0.9]}},
    }
    match = study_alignment._bench_match(_bench(base), arms, base)
    assert match == {"published": True, "joint": False}
    # a bench whose FREE row ran the SGD 0.1 step: that arm is compared with it instead
    sgd = arm_config(base, ARMS["sgd_0.1"])
    assert study_alignment._bench_match(_bench(sgd), arms, base) == {"sgd_0.1": False}


def test_a_pool_setting_the_bench_lacks_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"setting 'nope': must be one of \['single', 'multi'\]"):
        study_alignment.run("smoke", ["joint"], tmp_path, tmp_path, None, setting="nope")
    assert not any(tmp_path.iterdir())  # refused before anything was written
