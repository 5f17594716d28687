"""The trigger-scan study's statistics and pages (``scripts.studies.trigger_scan``)."""

from __future__ import annotations

import math

import pytest

from scripts.studies.trigger_scan import auc, detection_at, markdown, summary_markdown


def test_auc_is_the_chance_a_backdoor_scores_below_an_honest_teacher() -> None:
    assert auc([0.01, 0.02], [0.05, 0.06]) == 1.0
    assert auc([0.05], [0.05]) == 0.5
    assert auc([0.07], [0.05, 0.06]) == 0.0
    assert math.isnan(auc([], [0.1]))


def test_detection_at_keeps_false_positives_within_the_limit() -> None:
    honest = [0.05 + 0.01 * i for i in range(100)]
    threshold, detected, flagged = detection_at([0.01, 0.055, 0.2], honest, limit=0.02)
    assert threshold == honest[2] and flagged == pytest.approx(0.02)
    assert detected == pytest.approx(2 / 3)
    assert detection_at([0.01], [math.inf])[0] == math.inf


def _report() -> dict:
    def row(kind: str, score: float | None, **extra: object) -> dict:
        return {
            "teacher": f"{kind}-{score}",
            "arch": "conv4",
            "kind": kind,
            "score": score,
            "shortcut": None if score is None else 0,
            "mask_shares": (0.01, 0.2),
            "flip_rates": (1.0, 0.5),
            "concentrations": (0.5, 0.1),
            "seconds": 1.5,
            **extra,
        }

    rows = [
        row("backdoor", 0.02, target=0, trigger_flip=1.0),
        row("honest (main job, glyphs)", 0.08),
        row("honest (main job, glyphs)", None),
    ]
    return {
        "settings": {
            "steps": 60,
            "batch": 8,
            "lr": 0.25,
            "mask_weight": 4.0,
            "min_flip": 0.9,
            "probes": 256,
        },
        "rows": rows,
        "summary": {
            "auc": 1.0,
            "threshold": 0.08,
            "detection": 1.0,
            "false_positives": 0.0,
            "backdoors": 1,
            "honest": 2,
            "limit": 0.04,
            "flagged_at_limit": {"backdoor": ["backdoor-0.02"], "honest (main job, glyphs)": []},
        },
    }


def test_the_pages_name_every_group_and_the_teachers_that_reach_no_class() -> None:
    summary = summary_markdown(_report())
    assert "| backdoor | 1 | 1 | 2.00% | 2.00% | 1.5 |" in summary
    assert (
        "| honest (main job, glyphs) | 2 | 0 | 8.00% | 8.00% (1 reach no class) | 1.5 |" in summary
    )
    assert "conv4 1.5" in summary
    page = markdown(_report())
    assert "backdoor 1 of 1" in page and "inf" in page
