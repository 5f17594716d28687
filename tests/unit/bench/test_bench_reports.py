"""Summaries and tables of the benchmark scripts, on made-up measurements."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from free_common.config import FreeConfig
from free_common.models import ModelSpec, build_model
from scripts.bench import accuracy as bench_accuracy
from scripts.bench import recovery as bench_recovery
from scripts.bench.recovery import TeacherRow, summarise


def _row(free_s: float, scratch_s: float, held: bool, budget_s: float = 8.0) -> TeacherRow:
    return TeacherRow(
        "t",
        held,
        free_s,
        5,
        0.95,
        0.9,
        0.4,
        scratch_s,
        100,
        0.96,
        0.8,
        True,
        budget_s,
        0.99,
        free_fidelity=0.7,
        scratch_fidelity=0.6,
        budget_fidelity=0.65,
        real_fidelity=0.9,
        teacher_holdout=0.95,
    )


def test_recovery_speedup_is_ratio_of_mean_seconds() -> None:
    s = summarise([_row(0.1, 4.0, False), _row(0.3, 4.0, True)])
    assert s["speedup"] == pytest.approx(4.0 / 0.2)
    assert s["free_quality"] == pytest.approx(0.95)
    assert s["scratch_reached_fraction"] == 1.0
    assert s["published_budget_speedup"] == pytest.approx(8.0 / 0.2)
    assert s["published_budget_quality"] == pytest.approx(0.99)
    assert summarise([]) == {}


def test_recovery_markdown_lists_every_group() -> None:
    rows = [_row(0.1, 4.0, False), _row(0.2, 5.0, True)]
    report = {
        "preset": "x",
        "dataset": "synthetic",
        "device": "cpu",
        "threads": 1,
        "inversion": {
            "generator_width": 4,
            "images_per_class": 2,
            "inner_steps": 5,
            "scratch_steps": 200,
        },
        "published_budget_steps_ratio": 40.0,
        "summary": {
            "all": summarise(rows),
            "in_pool": summarise(rows[:1]),
            "held_out": summarise(rows[1:]),
        },
        "meta_training": {"iterations": 3, "seconds": 1.0, "seconds_per_iteration": 0.33},
        "quality_bar": 0.9,
        "meets_quality_bar": True,
        "speedup": 30.0,
        "pool": {"classes_per_teacher": 5},
        "fidelity": {
            "settings": {"steps": 200, "temperature": 4.0},
            "curve_teachers": 2,
            "matched": {
                "k": 5,
                "free_fidelity": 0.7,
                "free_seconds": 0.2,
                "reached": True,
                "scratch_steps": 40.0,
                "scratch_seconds": 1.0,
                "scratch_fidelity": 0.72,
                "speedup": 5.0,
            },
        },
    }
    text = bench_recovery.markdown(report)
    assert "| held-out | 1 | 5 |" in text and "**25.0x**" in text
    assert "fixed budget of 200 steps" in text and "53.3x FREE's time at k = 5" in text
    assert "| all | 2 | 5 | 0.700 | 0.600 | 0.650 | 0.900 | 0.950 |" in text
    assert "chance 0.20" in text and "at 40 steps" in text and "**5.0x** at matched" in text
    line = bench_recovery.headline(report)
    assert line.startswith("30.0x at matched quality (2 teachers, synthetic")
    assert "5.0x at matched fidelity" in line and "more than" not in line
    assert line.endswith(
        "FREE 0.70, scratch at matched quality 0.60, at 200 steps 0.65, as many real images 0.90"
    )
    report["fidelity"]["matched"]["reached"] = False
    assert "more than **5.0x**" in bench_recovery.markdown(report)
    assert "more than 5.0x at matched fidelity" in bench_recovery.headline(report)


def test_accuracy_aggregate_pools_seeds_and_checks_goal() -> None:
    tasks = 10
    per_seed = {
        s: {
            m: {1: np.full(tasks, value + 0.01 * s)}
            for m, value in {
                "free": 0.50,
                "random": 0.40,
                "average": 0.45,
                "scratch": 0.49,
                "no_alignment": 0.48,
                "hard_labels": 0.47,
                "maml": 0.60,
            }.items()
        }
        for s in (0, 1)
    }
    table = bench_accuracy._aggregate(per_seed, [1])
    row = table["1"]
    assert row["free"]["mean"] == pytest.approx(0.505)
    assert len(row["free"]["per_seed"]) == 2
    summary = row["_summary"]
    assert summary["best_data_free_baseline"] == "scratch"
    assert summary["free_minus_best_baseline_points"] == pytest.approx(1.0)
    assert summary["goal_met"] is False
    assert summary["ceiling_minus_free_points"] == pytest.approx(10.0)


def _report_of(methods: tuple[str, ...]) -> dict[str, object]:
    values = {"free": 0.50, "random": 0.40, "average": 0.45, "no_alignment": 0.48}
    per_seed = {0: {m: {1: np.full(10, values[m])} for m in methods}}
    return {
        "preset": "long",
        "note": "a note",
        "seeds": [0],
        "preset_seeds": [0],
        "preset_settings": ["single"],
        "shots": [1],
        "methods": list(methods),
        "test_tasks": 10,
        "free_config": FreeConfig.preset("paper-cpu").to_dict(),
        "settings": [
            {
                "name": "single",
                "archs": ["conv4"],
                "teachers": 4,
                "average_teachers": 4,
                "results": bench_accuracy._aggregate(per_seed, [1]),
            }
        ],
    }


def test_accuracy_markdown_names_the_methods_a_preset_does_not_run() -> None:
    text = bench_accuracy.markdown(_report_of(("free", "random", "average", "no_alignment")))
    assert "Not run in this preset: Scratch inversion + meta-learning, FREE, hard labels, " in text
    assert "| FREE w/o alignment | 48.00 ± 0.00 |" in text
    assert "MAML on real data" not in text.split("Not run in this preset")[1].split("\n", 1)[1]
    assert "best data-free baseline run here (Average (FedAvg)) = +5.00 points" in text
    assert "met against these baselines); ceiling − FREE = n/a points." in text
    assert "FREE's alignment step: inner Adam lr 0.001, outer gradient 67·(φ − φ')." in text


def test_accuracy_markdown_states_each_settings_own_seeds() -> None:
    report = _report_of(("free", "random", "average", "no_alignment"))
    report["seeds"], report["preset_seeds"] = [0, 1], [0, 1, 2]
    single = report["settings"][0]  # type: ignore[index]
    report["settings"] = [
        {**single, "seeds": [0, 1]},
        {**single, "name": "multi", "seeds": [0]},
    ]
    text = bench_accuracy.markdown(report)
    assert "x 2 seed(s) (PARTIAL: 2 of the preset's 3 seeds: 0, 1)" in text
    assert "x 1 seed(s) (PARTIAL: 1 of the preset's 3 seeds: 0)" in text
    assert text.count("| method | 1-shot | 1-shot per seed |") == 1  # only the 2-seed setting
    assert "| FREE | 50.00 ± 0.00 | 50.00 |" in text  # _report_of holds one seed's results


def test_alignment_step_names_the_published_sgd_and_joint_steps() -> None:
    paper = FreeConfig.preset("paper").to_dict()
    assert bench_accuracy.alignment_step(paper) == "inner Adam lr 0.001, outer gradient 67·(φ − φ')"
    sgd = {**paper, "meta_learner": {**paper["meta_learner"], "inner_optimizer": "sgd"}}
    sgd["meta_learner"].update(inner_lr=0.5, reptile_scale=2.0)
    assert bench_accuracy.alignment_step(sgd) == "inner SGD lr 0.5, outer gradient 2·(φ − φ')"
    paper["meta_learner"]["alignment"] = False
    assert bench_accuracy.alignment_step(paper) == "joint KD step (no alignment)"


def test_accuracy_presets_must_run_free_and_known_methods() -> None:
    full = bench_accuracy.PRESETS["full"]
    assert full.methods == bench_accuracy.METHODS and full.stem == "accuracy"
    long = bench_accuracy.PRESETS["long"]
    assert long.stem == "accuracy_long" and "scratch" not in long.methods
    assert long.free.iterations == 8 * full.free.iterations
    for methods in (("random", "average"), ("free", "oracle")):
        with pytest.raises(ValueError, match="must include 'free'"):
            replace(full, methods=methods)


def test_accuracy_markdown_adds_the_tuned_protocol_with_its_chosen_rates() -> None:
    report = _report_of(("free", "random", "average", "no_alignment"))
    report.update(finetune_lrs=[0.01, 0.1], lr_val_tasks=7, seeds=[0, 1], preset_seeds=[0, 1])
    single = report["settings"][0]  # type: ignore[index]
    values = {"free": 0.60, "random": 0.55, "average": 0.50, "no_alignment": 0.52}
    per_seed = {1: {m: {1: np.full(10, v)} for m, v in values.items()}}
    single.update(
        seeds=[0, 1],
        tuned={
            "seeds": [1],
            "results": bench_accuracy._aggregate(per_seed, [1]),
            "lrs": {"1": {"free": {"1": 0.1}, "random": {"1": 0.1}, "average": {"1": 0.01}}},
        },
    )
    text = bench_accuracy.markdown(report)
    assert "from 0.01, 0.1; 1 seed(s): 1 (measured before this protocol: seed(s) 0)" in text
    assert "(7 tasks per rate)" in text
    assert "| method | 1-shot | rate 1-shot |" in text
    assert (
        "| FREE | 60.00 ± 0.00 | 0.1 |" in text
        and "| Average (FedAvg) | 50.00 ± 0.00 | 0.01 |" in text
    )
    assert "| FREE w/o alignment | 52.00 ± 0.00 | n/a |" in text
    assert (
        "1-shot, rates tuned on meta-val: FREE − best data-free baseline run here (Random) = +5.00"
        in text
    )


def test_unit_weights_copy_a_model_serving_every_shot_once() -> None:
    spec = ModelSpec("conv4", image_size=16, width=4, num_classes=3)
    shared, other = build_model(spec), build_model(spec)
    weights = bench_accuracy._weights({"free": {1: shared, 5: shared}, "maml": {1: other}})
    assert weights["free"][1] is weights["free"][5]  # stored once by torch.save
    first = next(iter(weights["free"][1].values()))
    assert first.data_ptr() != next(iter(shared.state_dict().values())).data_ptr()  # a copy
    assert torch.equal(first, next(iter(shared.state_dict().values())))
