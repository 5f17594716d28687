import dataclasses
import hashlib
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

import server.pool as pool_module
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
    # the accepted model's file sits in models/<first two hex digits of its digest>, which
    # can be one of these folders (a run failed so before exist_ok)
    stray = tmp_path / "models" / "ff" / "ff00.safetensors.123.tmp"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"partial")
    orphan = tmp_path / "models" / "ee" / "ee00.safetensors"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"no row")
    with ModelPool(tmp_path) as pool:
        assert pool.ids() == [tid]
    assert not stray.exists() and not orphan.exists()


def _file_of(root: Path, teacher_id: str) -> Path:
    with sqlite3.connect(root / "pool.db") as db:
        (rel,) = db.execute(
            "SELECT relpath FROM models WHERE teacher_id=?", (teacher_id,)
        ).fetchone()
    return root / rel


def test_corrupted_file_is_refused_and_quarantined(tmp_path: Path) -> None:
    with ModelPool(tmp_path) as pool:
        tid, other = _accept(pool, 0), _accept(pool, 1)
        path = _file_of(tmp_path, tid)
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
        with pytest.raises(PoolError, match="SHA-256"):
            pool.load(tid)
        with pytest.raises(PoolError, match="unknown"):
            pool.load("nope")
        assert pool.ids() == [other]
        [record] = pool.quarantined()
        assert record.teacher_id == tid and "SHA-256" in record.reason
        assert pool.summary()["quarantined"] == 1
    assert not path.exists() and (tmp_path / "quarantine" / path.name).read_bytes() == data
    with ModelPool(tmp_path) as again:  # the damaged file is kept aside, not "recovered"
        assert again.ids() == [other] and len(again.quarantined()) == 1
    assert (tmp_path / "quarantine" / path.name).exists()


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_missing_or_cut_file_is_quarantined_and_the_rest_opens(tmp_path: Path, damage: str) -> None:
    with ModelPool(tmp_path) as pool:
        ids = [_accept(pool, s) for s in range(3)]
    path = _file_of(tmp_path, ids[1])
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:-10])
    with ModelPool(tmp_path) as pool:
        assert pool.ids() == [ids[0], ids[2]]
        assert all(pool.load(t).model is not None for t in pool.ids())
        [record] = pool.quarantined()
        assert record.teacher_id == ids[1]
        assert ("missing" if damage == "missing" else "bytes, recorded") in record.reason
        # the same model, sent again, is accepted again (under a fresh id)
        again = _accept(pool, 1)
        assert again != ids[1] and pool.load(again).model is not None


def test_reader_reports_damage_but_leaves_the_entry_to_the_writer(tmp_path: Path) -> None:
    with ModelPool(tmp_path) as pool:
        tid = _accept(pool, 0)
    _file_of(tmp_path, tid).unlink()
    with ModelPool(tmp_path, readonly=True) as reader:
        with pytest.raises(PoolError, match="missing"):
            reader.load_tensors(tid)
        assert reader.ids() == [tid] and reader.quarantined() == []


def test_load_parses_the_bytes_it_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is swapped for another valid model right after its hash was checked."""
    with ModelPool(tmp_path) as pool:
        tid, other = _accept(pool, 0), _accept(pool, 1)
        path, swap_in = _file_of(tmp_path, tid), _file_of(tmp_path, other).read_bytes()
        checked = pool.load_tensors(tid)
        real_sha256 = hashlib.sha256

        def sha256_then_swap(data: bytes = b"") -> Any:
            digest = real_sha256(data)
            path.write_bytes(swap_in)  # the race: the file changes between check and parse
            return digest

        monkeypatch.setattr(pool_module, "hashlib", SimpleNamespace(sha256=sha256_then_swap))
        loaded = pool.load_tensors(tid)
    assert loaded.keys() == checked.keys()
    assert all(np.array_equal(loaded[k], checked[k]) for k in checked)


def test_unparsable_file_with_a_matching_hash_is_a_pool_error(tmp_path: Path) -> None:
    """Both the file and its recorded hash were changed: the parse error is the pool's own."""
    with ModelPool(tmp_path) as pool:
        tid, other = _accept(pool, 0), _accept(pool, 1)
    path = _file_of(tmp_path, tid)
    junk = b"\xff" * path.stat().st_size
    path.write_bytes(junk)
    with sqlite3.connect(tmp_path / "pool.db") as db:
        db.execute(
            "UPDATE models SET file_sha256=? WHERE teacher_id=?",
            (hashlib.sha256(junk).hexdigest(), tid),
        )
    with ModelPool(tmp_path) as pool:
        with pytest.raises(PoolError, match="not a readable safetensors file"):
            pool.load(tid)
        assert pool.ids() == [other]
        assert "safetensors" in pool.quarantined()[0].reason


def test_digest_prefix_collision_gets_a_longer_id(tmp_path: Path) -> None:
    """Two digests that share their first 8 bytes (an owner can grind one) both get in."""
    with ModelPool(tmp_path) as pool:
        checked = [
            Validator().validate(make_submission(f"owner-{s}", seed=s), node_id=s) for s in range(3)
        ]
        prefix = "ab" * 8
        forced = [dataclasses.replace(c, digest=prefix + c.digest[16:]) for c in checked[:2]] + [
            dataclasses.replace(checked[2], digest=prefix + checked[0].digest[16:40] + "0" * 24)
        ]
        ids = [pool.add(c, node_id=i, round_num=1) for i, c in enumerate(forced)]
        assert len(set(ids)) == 3 and ids[0] == f"t{prefix}"
        assert all(t.startswith(f"t{prefix}") for t in ids)
        assert pool.ids() == ids
        for tid, c in zip(ids, forced, strict=True):
            state = pool.load_tensors(tid)
            assert all(np.array_equal(state[k], v) for k, v in c.submission.tensors.items())


def test_one_writer_at_a_time_and_readers_never_recover(tmp_path: Path) -> None:
    with ModelPool(tmp_path) as writer:
        tid = _accept(writer, 0)
        # what a live writer has on disk mid-add: a temporary file, then a renamed file
        # whose row is not committed yet
        pending = tmp_path / "models" / "ff" / "ff00.safetensors.123.tmp"
        pending.parent.mkdir(parents=True, exist_ok=True)  # the accepted model's digest
        pending.write_bytes(b"partial")  # may start with ff or ee (its folder then exists)
        renamed = tmp_path / "models" / "ee" / "ee00.safetensors"
        renamed.parent.mkdir(parents=True, exist_ok=True)
        renamed.write_bytes(b"row not committed yet")
        with pytest.raises(PoolError, match=r"open for writing by another process \(pid \d+\)"):
            ModelPool(tmp_path)
        with ModelPool(tmp_path, readonly=True) as reader:
            assert reader.ids() == [tid]
            assert reader.load(tid).model is not None
            for write in (
                lambda: reader.set_meta("k", "v"),
                lambda: reader.record_failure(round_num=1, node_id=1, kind="x", detail="y"),
                lambda: _accept(reader, 1),
            ):
                with pytest.raises(PoolError, match="read-only"):
                    write()
        assert pending.exists() and renamed.exists()
        assert writer.ids() == [tid]
    with ModelPool(tmp_path) as next_writer:  # the lock is released on close
        assert next_writer.ids() == [tid]
    assert not pending.exists() and not renamed.exists()


def test_reader_needs_an_existing_pool(tmp_path: Path) -> None:
    with pytest.raises(PoolError, match="no pool index"):
        ModelPool(tmp_path / "nowhere", readonly=True)
    (tmp_path / "pool.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(PoolError, match="pool index"):
        ModelPool(tmp_path, readonly=True)
    assert not (tmp_path / "models").exists()
