import os
from pathlib import Path

import pytest
import torch

from free_common.free.teachers import TeacherSource
from server.pool import ModelPool, PoolError
from server.validation import Validator

from .helpers import make_submission, tiny_spec


def _accept(pool: ModelPool, seed: int, arch: str = "conv4") -> str:
    sub = make_submission(f"owner-{seed:03d}", seed=seed, spec=tiny_spec(arch))
    checked = Validator(seen=pool.has_digest).validate(sub, node_id=seed)
    return pool.add(checked, node_id=seed, round_num=1)


def test_add_load_and_reopen(tmp_path: Path) -> None:
    with ModelPool(tmp_path) as pool:
        assert isinstance(pool, TeacherSource)
        ids = [_accept(pool, s, arch) for s, arch in enumerate(["conv4", "resnet10"])]
        assert pool.ids() == ids
        teacher = pool.load(ids[1])
        assert teacher.spec.arch == "resnet10"
        assert not teacher.model.training
        assert teacher.class_keys == tuple(f"{ids[1]}/{i}" for i in range(5))
        out = teacher.model(torch.rand(2, 1, 16, 16))
        assert out.shape == (2, 5)
        pool.record_rejection(round_num=1, node_id=9, digest="ab", reason="shape", detail="x")
        pool.record_failure(round_num=1, node_id=8, kind="timeout", detail="late")
        pool.set_meta("collected-round", "1")
    with ModelPool(tmp_path) as again:
        assert again.ids() == ids
        assert again.get_meta("collected-round") == "1"
        assert [r.reason for r in again.rejections()] == ["shape"]
        assert [f.kind for f in again.failures()] == ["timeout"]
        assert again.summary()["by_arch"] == {"conv4": 1, "resnet10": 1}


def test_add_is_idempotent_per_digest(tmp_path: Path) -> None:
    with ModelPool(tmp_path) as pool:
        sub = make_submission()
        checked = Validator().validate(sub, node_id=1)
        assert pool.add(checked, node_id=1, round_num=1) == pool.add(
            checked, node_id=2, round_num=2
        )
        assert len(pool) == 1
        assert pool.has_digest(checked.digest)


def test_interrupted_write_leftovers_are_cleaned(tmp_path: Path) -> None:
    with ModelPool(tmp_path) as pool:
        tid = _accept(pool, 0)
    stray = tmp_path / "models" / "ff" / "ff00.safetensors.123.tmp"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"partial")
    orphan = tmp_path / "models" / "ee" / "ee00.safetensors"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"no row")
    with ModelPool(tmp_path) as pool:
        assert pool.ids() == [tid]
    assert not stray.exists() and not orphan.exists()


def test_corrupted_or_missing_file_is_detected(tmp_path: Path) -> None:
    with ModelPool(tmp_path) as pool:
        tid = _accept(pool, 0)
        path = next((tmp_path / "models").rglob("*.safetensors"))
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
        with pytest.raises(PoolError, match="SHA-256"):
            pool.load(tid)
        with pytest.raises(PoolError, match="unknown"):
            pool.load("nope")
    os.remove(path)
    with pytest.raises(PoolError, match="missing files"):
        ModelPool(tmp_path)
