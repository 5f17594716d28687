"""The alignment study end to end on the ``smoke`` budget (synthetic data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.studies import alignment as study_alignment

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _args(tmp_path: Path, out: str) -> list[str]:
    return [
        "--budget",
        "smoke",
        "--out",
        str(tmp_path / out),
        "--units",
        str(tmp_path / "units"),
        "--cache-dir",
        str(tmp_path / "pools"),
        "--draws",
        "2",
    ]


def test_study_measures_every_arm_then_reuses_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert study_alignment.main(_args(tmp_path, "a")) == 0
    report = json.loads((tmp_path / "a" / "alignment_smoke.json").read_text())
    assert set(report["results"]) == set(study_alignment.ARMS)
    for name, result in report["results"].items():
        assert "diverged" in result or 0.0 <= result["1"]["mean"] <= 1.0, name
    directions = report["directions"]
    assert directions["joint"]["cos_joint"] == pytest.approx(1.0, abs=1e-5)
    # a small SGD inner step is the joint direction plus a small alignment term ...
    assert directions["sgd_0.015"]["cos_joint"] > 0.98
    # ... while the published fresh inner Adam points along the per-teacher signs
    assert directions["published"]["cos_sign"] > directions["published"]["cos_joint"]
    assert (tmp_path / "a" / "alignment_smoke_val_curves.png").stat().st_size > 0

    def must_not_train(*_: object, **__: object) -> None:
        raise AssertionError("a finished arm was trained again")

    monkeypatch.setattr(study_alignment, "_train_arm", must_not_train)
    assert study_alignment.main(_args(tmp_path, "b")) == 0
    again = json.loads((tmp_path / "b" / "alignment_smoke.json").read_text())
    assert again["results"] == report["results"]


def test_bad_draws_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        study_alignment.main([*_args(tmp_path, "c")[:-1], "0"])
    assert exc.value.code == 2
    assert "--draws must be >= 1" in capsys.readouterr().err


def test_study_runs_on_the_multi_architecture_pool(tmp_path: Path) -> None:
    args = [*_args(tmp_path, "m"), "--setting", "multi", "--arms", "published", "joint"]
    assert study_alignment.main(args) == 0
    report = json.loads((tmp_path / "m" / "alignment_smoke_multi.json").read_text())
    assert report["setting"] == "multi"
    assert set(report["results"]) == {"published", "joint"}
    saved = sorted(p.name for p in (tmp_path / "units" / "smoke" / "multi").glob("*.json"))
    assert saved == ["joint.json", "published.json"]
    assert not (tmp_path / "m" / "alignment_smoke.json").exists()  # the single pool's stem
    assert "multi pool of 3 teachers" in (tmp_path / "m" / "alignment_smoke_multi.md").read_text()
