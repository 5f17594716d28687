import json
from pathlib import Path

import pytest

from scripts.bench import allocator


def test_the_bench_times_both_settings_in_child_processes_and_writes_its_report(
    tmp_path: Path,
) -> None:
    argv = ["--rounds", "1", "--tasks", "2", "--steps", "1", "--batch", "4"]
    assert allocator.main([*argv, "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "allocator.json").read_text())
    assert set(result["ms"]) == set(allocator.SETTINGS)
    for setting in allocator.SETTINGS:
        assert set(result["ms"][setting]) == set(allocator.MEASURES)
        assert all(ms > 0 for ms in result["ms"][setting].values())
    for m in allocator.MEASURES:
        want = result["ms"]["run_main.sh"][m] / result["ms"]["glibc default"][m]
        assert abs(result["ratio"][m] - want) < 1e-9
    report = (tmp_path / "allocator.md").read_text()
    assert "| stage_step_thread |" in report and "run_main.sh thresholds" in report


def test_a_child_starts_with_exactly_its_setting_s_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "1")
    assert not any(k.startswith("MALLOC_") for k in allocator._child_env({}))
    env = allocator._child_env(allocator.SETTINGS["run_main.sh"])
    assert env["MALLOC_MMAP_THRESHOLD_"] == env["MALLOC_TRIM_THRESHOLD_"] == str(256 * 2**20)
