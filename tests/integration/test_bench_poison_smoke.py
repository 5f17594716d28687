"""The poisoned-pool benchmark end to end on its ``smoke`` preset, and its resumable units."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.bench import poison as bench_poison

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _rows(root: Path, unit: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = json.loads(
        (root / "detection" / f"{unit}-seed0.json").read_text()
    )["rows"]
    return rows


def test_poison_smoke_writes_the_report_and_resumes_without_recomputing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, work, pools = tmp_path / "results", tmp_path / "work", tmp_path / "pools"
    args = ["--preset", "smoke", "--out", str(out), "--work-dir", str(work)]
    assert bench_poison.main([*args, "--cache-dir", str(pools)]) == 0
    report = json.loads((out / "poison_smoke.json").read_text())
    root = out / "poison_units" / "smoke"
    units = sorted(str(p.relative_to(root)) for p in root.rglob("*.json"))
    assert units == [
        "accuracy/level00-defences-off-seed0.json",
        "accuracy/level00-defences-on-seed0.json",
        "accuracy/level50-defences-off-seed0.json",
        "accuracy/level50-defences-on-seed0.json",
        "detection/level00-seed0.json",
        "detection/level50-seed0.json",
    ]
    assert report["units"] == {"detection": 2, "accuracy": 4}
    assert set(report["accuracy"]["table"]) == {"off/0.0", "off/0.5", "on/0.0", "on/0.5"}
    detection = report["detection"]
    failed_trainings = sum(b["screened"] for b in detection["broken"].values())
    assert detection["honest_teachers"] + failed_trainings == 6 + 3  # every honest row
    for name in ("poison_smoke.md", "poison_smoke.png"):
        assert (out / name).stat().st_size > 0
    # 12 rows over two pools, 9 distinct teachers: the 6 honest ones of the clean pool are
    # met again beside 3 attacks and screened alone once (the memo beside the attacks)
    memo = bench_poison._load_memo(bench_poison._memo_file(work, "smoke"))
    assert len(memo) == 9
    assert sorted(v["verdict"]["teacher_id"] for v in memo.values()) == sorted(
        {row["teacher"] for unit in ("level00", "level50") for row in _rows(root, unit)}
    )

    def recompute(*_: object, **__: object) -> None:
        raise AssertionError("a finished unit was measured again")

    monkeypatch.setattr(bench_poison, "_detection_unit", recompute)
    monkeypatch.setattr(bench_poison, "_accuracy_unit", recompute)
    monkeypatch.setattr(bench_poison.attacks, "backdoored", recompute)  # attacks are cached too
    assert bench_poison.main([*args, "--cache-dir", str(pools)]) == 0
    again = json.loads((out / "poison_smoke.json").read_text())
    assert again["accuracy"] == report["accuracy"] and again["detection"] == report["detection"]
