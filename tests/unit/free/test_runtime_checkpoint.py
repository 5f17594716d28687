import random
from pathlib import Path

import numpy as np
import pytest
import torch

from free_common.runtime import (
    get_rng_state,
    host_record,
    pick_device,
    seed_everything,
    set_rng_state,
)
from server.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def _draw() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(1))  # noqa: NPY002


def test_rng_state_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    seed_everything(3)
    _draw()
    save_checkpoint(tmp_path / "c.pt", {"rng": get_rng_state()})
    expected = _draw()
    seed_everything(99)
    state = load_checkpoint(tmp_path / "c.pt")
    assert state is not None
    set_rng_state(state["rng"])
    assert _draw() == expected


def test_pick_device() -> None:
    assert pick_device("cpu").type == "cpu"
    assert pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_host_record_names_the_device_it_is_given() -> None:
    record = host_record(torch.device("cpu"))
    assert record["device"].startswith("cpu (")
    assert record["threads"] == torch.get_num_threads()
    assert record["torch"] == torch.__version__
    assert host_record(torch.device("cuda"))["device"].startswith("cuda (")


def test_missing_checkpoint_is_none_and_garbage_raises(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path / "none.pt") is None
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "bad.pt")


def test_failed_write_keeps_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "latest.pt"
    save_checkpoint(path, {"iteration": 1})

    def explode(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", explode)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"iteration": 2})
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state is not None and state["iteration"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]  # no temp file left
