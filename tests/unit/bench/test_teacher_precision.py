import json
from pathlib import Path

from scripts.bench import teacher_precision


def test_the_bench_times_every_setting_side_by_side_and_writes_its_report(tmp_path: Path) -> None:
    argv = ["--threads", "1", "--batch", "4", "--teachers", "2", "--rounds", "1", "--repeats", "1"]
    assert teacher_precision.main([*argv, "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "teacher_precision.json").read_text())
    settings = {"float32", "bfloat16", "bfloat16_learner"}
    assert set(result["step_ms"]) == set(result["teachers_ms"]) == settings
    assert all(ms > 0 for ms in result["step_ms"].values())
    ratio = result["step_ms"]["bfloat16"] / result["step_ms"]["float32"]
    assert abs(result["step_ratio"] - ratio) < 1e-9
    learner = result["step_ms"]["bfloat16_learner"] / result["step_ms"]["bfloat16"]
    assert abs(result["learner_step_ratio"] - learner) < 1e-9
    assert 0.999 < result["min_target_cosine"] <= 1.0 + 1e-6
    report = (tmp_path / "teacher_precision.md").read_text()
    assert "| bfloat16 | float32 |" in report and "| bfloat16 | bfloat16 |" in report
    assert "bfloat16 teachers / float32 step time" in report
    assert "bfloat16 learner too / bfloat16 teachers" in report
