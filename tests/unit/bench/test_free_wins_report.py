"""The does-FREE-win reports: the ceiling is never a baseline; the multi-domain page."""

from __future__ import annotations

import json
from pathlib import Path

from scripts.bench.free_wins import headline, multidomain_markdown, multidomain_report, report


def _unit(root: Path, pool: str, method: str, seed: int, setting: str, mean: float) -> None:
    path = root / pool / f"{method}-s{seed}" / f"{setting}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    result = {"mean": mean, "ci95": 0.01, "lr": 0.1, "head": "proto"}
    unit = {"pool": pool, "method": method, "seed": seed, "setting": setting}
    path.write_text(json.dumps({**unit, "method_key": "k", "protocols": {"tuned": result}}))


def test_the_ceiling_is_shown_but_never_the_baseline_of_frees_margin(tmp_path: Path) -> None:
    root = tmp_path / "custom"  # not a preset name: no unit is judged out of date
    for seed, free in ((0, 0.80), (1, 0.78)):
        _unit(root, "mixed", "free", seed, "icons-5w1s", free)
        _unit(root, "mixed", "ceiling", seed, "icons-5w1s", 0.95)
        _unit(root, "mixed", "random", seed, "icons-5w1s", 0.70)
    cell = report(root)["results"]["mixed"]["icons-5w1s"]["tuned"]
    assert cell["methods"]["ceiling"]["mean"] == 95.0
    assert cell["margin"]["best_baseline"] == "random"
    assert cell["margin"]["points"] == 9.0 and cell["margin"]["every_seed_beats"]


def test_the_multidomain_page_names_what_was_not_measured(tmp_path: Path) -> None:
    root = tmp_path / "custom"
    assert multidomain_report(root) is None  # no mixed-pool unit: no page
    _unit(root, "single", "random", 0, "glyphs-5w1s", 0.70)
    assert multidomain_report(root) is None
    _unit(root, "mixed", "random", 0, "glyphs-5w1s", 0.70)
    rep = multidomain_report(root)
    assert rep is not None and rep["units"] == 1
    assert set(rep["results"]) == {"mixed"}
    assert set(rep["not_measured"]) == {"free", "average", "best_owner", "scratch", "ceiling"}
    assert "240 s per iteration" in rep["not_measured"]["scratch"]
    page = multidomain_markdown(rep)
    assert "| Random | 70.00 ± 0.00 (70.00) [1.00] n=1 |" in page
    assert "Not measured:" in page and "- Ceiling: pre-trained" in page


def test_the_headline_gives_each_margin_its_verdict_and_names_what_is_missing(
    tmp_path: Path,
) -> None:
    root = tmp_path / "custom"
    for seed, free in ((0, 0.86), (1, 0.85)):
        _unit(root, "single", "free", seed, "glyphs-5w1s", free)  # +5.5 over 0.80: goal met
        _unit(root, "single", "free", seed, "glyphs-20w1s", free - 0.24)  # +1.5: goal not met
        _unit(root, "single", "free", seed, "fashion-5w1s", (0.70, 0.58)[seed])  # a seed below
    _unit(root, "single", "best_owner", 0, "glyphs-5w1s", 0.80)
    _unit(root, "single", "best_owner", 0, "glyphs-20w1s", 0.60)
    _unit(root, "single", "random", 0, "fashion-5w1s", 0.60)
    _unit(root, "single", "random", 0, "glyphs-5w5s", 0.90)  # no FREE unit yet
    line = headline(report(root))
    assert "\n" not in line
    assert "tuned (2 seeds) glyphs-5w1s 85.5 (+5.50, goal met)" in line
    assert "glyphs-20w1s 61.5 (+1.50, goal not met)" in line
    assert "fashion-5w1s 64.0 (+4.00 vs random, a seed below)" in line
    assert "not yet measured: glyphs-5w5s" in line
    assert headline(report(tmp_path / "empty")) == "nothing measured yet."
    _unit(root, "mixed", "random", 0, "icons-5w1s", 0.30)
    assert "glyph + icon pool: tuned: FREE not yet measured" in headline(report(root))
