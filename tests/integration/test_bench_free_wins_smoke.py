"""The does-FREE-win benchmark end to end on its ``smoke`` preset (synthetic data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from scripts.bench import free_wins as bench_free_wins

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_smoke_reports_every_method_over_seeds_and_resumes_without_remeasuring(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results"
    args = [
        "--preset", "smoke", "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
        "--seeds", "0,1", "--methods", "free,random,average,best_owner,ceiling", "--threads", "1",
    ]  # fmt: skip
    assert bench_free_wins.main([*args, "--protocols", "proto"]) == 0
    units = sorted((out / "free_wins_units" / "smoke").rglob("*.json"))
    first = {p: json.loads(p.read_text()) for p in units}
    assert {tuple(u["protocols"]) for u in first.values()} == {("proto",)}
    assert bench_free_wins.main(args) == 0  # adds the other protocols, keeps what was measured
    for path, before in first.items():
        after = json.loads(path.read_text())
        assert set(after["protocols"]) == {"tuned", "published", "proto"}
        assert after["accuracies"]["proto"] == before["accuracies"]["proto"]
    report = json.loads((out / "free_wins_smoke.json").read_text())
    assert report["units"] == 2 * (2 + 2 + 1 + 1 + 2)  # settings x (seeded x 2 + deterministic)
    for setting in ("glyphs-5w1s", "glyphs-5w5s"):
        for protocol in ("tuned", "published", "proto"):
            cell = report["results"]["single"][setting][protocol]
            methods = cell["methods"]
            assert set(methods) == {"free", "random", "average", "best_owner", "ceiling"}
            free = methods["free"]
            seeds = list(free["seeds"].values())
            assert set(free["seeds"]) == {"0", "1"} and set(methods["average"]["seeds"]) == {"0"}
            assert free["worst"] == min(seeds)
            assert free["mean"] == pytest.approx(np.mean(seeds), abs=0.01)
            assert free["sd"] == pytest.approx(np.std(seeds, ddof=1), abs=0.01)
            margin = cell["margin"]
            best = margin["best_baseline"]
            assert best in ("random", "average", "best_owner")  # the ceiling sees real images
            top = max(methods[m]["mean"] for m in ("random", "average", "best_owner"))
            assert methods[best]["mean"] == top  # any of several tied at the top
            assert margin["points"] == pytest.approx(free["mean"] - methods[best]["mean"], abs=0.01)
            assert margin["every_seed_beats"] == (min(seeds) > methods[best]["mean"])
    assert "FREE's margin:" in capsys.readouterr().out
    stamps = {p: p.stat().st_mtime_ns for p in units}
    assert bench_free_wins.main(args) == 0  # every unit finished: nothing is measured again
    assert {p: p.stat().st_mtime_ns for p in units} == stamps
    unit = json.loads(units[0].read_text())
    assert len(unit["accuracies"]["tuned"]) == bench_free_wins.PRESETS["smoke"].protocols.test_tasks


def test_unknown_methods_pools_and_settings_are_refused(tmp_path: Path) -> None:
    for flag, value in (("--methods", "free,magic"), ("--pools", "huge"), ("--settings", "x")):
        with pytest.raises(SystemExit) as err:
            bench_free_wins.main(["--preset", "smoke", "--out", str(tmp_path), flag, value])
        assert err.value.code == 2


def test_the_mixed_pool_meta_tests_each_domain_with_an_rgb_learner(tmp_path: Path) -> None:
    out, cache = tmp_path / "results", tmp_path / "cache"
    args = [
        "--preset", "smoke", "--out", str(out), "--cache-dir", str(cache), "--pools", "mixed",
        "--seeds", "0", "--methods", "free,free_same_input,scratch,random,average",
        "--protocols", "tuned,proto",
        "--threads", "1",
    ]  # fmt: skip
    assert bench_free_wins.main(args) == 0
    root = out / "free_wins_units" / "smoke" / "mixed"
    settings = {p.stem for p in root.rglob("*.json")}
    assert settings == {"glyphs-5w1s", "glyphs-5w5s", "icons-5w1s", "icons-5w5s"}
    scratch = json.loads((root / "scratch-s0" / "icons-5w1s.json").read_text())
    assert scratch["model"]["preset"] == "xkd-cpu"  # the default's meta-learning
    cell = json.loads((out / "free_wins_smoke.json").read_text())["results"]["mixed"]
    methods = cell["icons-5w1s"]["tuned"]["methods"]
    best = max(methods[m]["mean"] for m in ("scratch", "random", "average"))
    chosen = cell["icons-5w1s"]["tuned"]["margin"]["best_baseline"]
    assert chosen in ("scratch", "random", "average")  # scratch competes
    assert methods[chosen]["mean"] == best  # any of several tied at the top
    same_input = json.loads((root / "free_same_input-s0" / "glyphs-5w1s.json").read_text())
    per_domain = json.loads((root / "free-s0" / "glyphs-5w1s.json").read_text())
    same_input, per_domain = same_input["model"], per_domain["model"]
    assert [t.split("-")[0] for t in same_input["distilled"]] == ["icons"]  # RGB owners only
    assert sorted(t.split("-")[0] for t in per_domain["distilled"]) == ["glyphs", "icons"]
    average = json.loads((root / "average-s0" / "icons-5w1s.json").read_text())
    assert average["model"]["note"].startswith("mean of 1 conv4")  # the RGB icon owner only
    teachers = bench_free_wins.pool_teachers(bench_free_wins.PRESETS["smoke"], "mixed", cache)
    ids = teachers.ids()
    assert [i.split("-")[0] for i in ids] == ["glyphs", "icons"]
    channels = [teachers.load(i).spec.in_channels for i in ids]
    assert channels == [1, 3]  # each owner at its domain's channels
    config = bench_free_wins.free_config(bench_free_wins.PRESETS["smoke"], "free", 0, "mixed")
    assert config.meta_learner.channels == 3 and config.eval.q_query == 5  # icon classes fit
    text = (out / "free_wins_smoke.md").read_text()
    assert "**mixed pool**: glyphs and icons owners" in text
    with pytest.raises(ValueError, match="does not run fashion-5w1s"):
        bench_free_wins.run_unit(
            "smoke", "mixed", "random", 0, "fashion-5w1s", root=out, cache={}, cache_dir=cache
        )
