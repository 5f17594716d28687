"""The pull cache skips and reports damaged entries and keeps serving its newest good model."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from client.edge import cli
from client.edge.hub_client import ModelCache
from client.edge.verify import MODEL_FILE, VerificationError, VerifiedModel, verify_bundle
from free_common import signing
from free_common.export.manifest import Bundle, write_bundle
from tests.edge_bundles import TinyGraph, manifest, signed_bundle, tiny_model

pytestmark = pytest.mark.timeout(20)

PEM, RAW = signing.generate_keypair()
PRIVATE, PUBLIC = signing.load_private_key(PEM), signing.load_public_key(RAW)


def _verified(bundle: Bundle) -> VerifiedModel:
    return verify_bundle(bundle.onnx, bundle.manifest, bundle.signature, PUBLIC)


def _version(version: int) -> Bundle:
    return signed_bundle(PRIVATE, tiny_model(TinyGraph(version=version)), manifest(version))


def _digest_name(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


def _newer_bundle_with(root: Path, damage: Callable[[Path], None]) -> None:
    """A v3 entry (genuinely signed) whose files were then damaged."""
    bundle = _version(3)
    folder = write_bundle(bundle, root / hashlib.sha256(bundle.onnx).hexdigest())
    damage(folder)


def _model_to_dev_zero(folder: Path) -> None:
    (folder / MODEL_FILE).unlink()
    (folder / MODEL_FILE).symlink_to("/dev/zero")


def _manifest_as_fifo(folder: Path) -> None:
    (folder / "manifest.binpb").unlink()
    os.mkfifo(folder / "manifest.binpb")


def _entry_is_symlink_loop(root: Path) -> None:
    (root / _digest_name("loop")).symlink_to(_digest_name("loop"))


def _entry_is_file(root: Path) -> None:
    (root / _digest_name("file")).write_bytes(b"not a bundle")


def _entry_points_at_dev(root: Path) -> None:
    (root / _digest_name("dev")).symlink_to("/dev")


def _entry_misnamed(root: Path) -> None:
    write_bundle(_version(3), root / _digest_name("another model"))


DAMAGED: dict[str, Callable[[Path], None]] = {
    "model-dev-zero": lambda root: _newer_bundle_with(root, _model_to_dev_zero),
    "manifest-fifo": lambda root: _newer_bundle_with(root, _manifest_as_fifo),
    "entry-symlink-loop": _entry_is_symlink_loop,
    "entry-regular-file": _entry_is_file,
    "entry-symlink-to-dev": _entry_points_at_dev,
    "entry-misnamed": _entry_misnamed,
}


def _cache_with_good_v2(root: Path) -> ModelCache:
    cache = ModelCache(root)
    cache.install(_verified(_version(1)))
    cache.install(_verified(_version(2)))
    return cache


@pytest.mark.parametrize("damage", list(DAMAGED))
def test_latest_skips_damaged_entry_and_returns_newest_good(tmp_path: Path, damage: str) -> None:
    cache = _cache_with_good_v2(tmp_path / "cache")
    DAMAGED[damage](cache.root)
    start = time.perf_counter()
    latest = cache.latest("proto", PUBLIC)
    assert time.perf_counter() - start < 0.5
    assert latest is not None and latest.manifest.model_version == 2


@pytest.mark.parametrize("damage", list(DAMAGED))
def test_scan_reports_the_damaged_entry(tmp_path: Path, damage: str) -> None:
    cache = _cache_with_good_v2(tmp_path / "cache")
    DAMAGED[damage](cache.root)
    scan = cache.scan("proto", PUBLIC)
    assert [v.manifest.model_version for v in scan.bundles] == [2]  # v1 is below trusted
    assert len(scan.skipped) == 1 and scan.skipped[0].reason


@pytest.mark.parametrize("damage", list(DAMAGED))
def test_cli_verify_cache_uses_newest_good_bundle(
    tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = _cache_with_good_v2(tmp_path / "cache")
    DAMAGED[damage](cache.root)
    (tmp_path / "key.pub").write_bytes(RAW)
    args = ["verify", "--cache", str(cache.root), "--public-key", str(tmp_path / "key.pub")]
    assert cli.main(args) == 0
    assert capsys.readouterr().out.startswith("OK tiny/proto v2")


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "garbage"])
def test_damaged_trust_table_does_not_stop_the_device(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = _cache_with_good_v2(tmp_path / "cache")
    (tmp_path / "key.pub").write_bytes(RAW)
    table = cache.root / "trusted.json"
    table.unlink()
    if kind == "dev-zero":
        table.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(table)
    else:
        table.write_text("{not json")
    start = time.perf_counter()
    args = ["verify", "--cache", str(cache.root), "--public-key", str(tmp_path / "key.pub")]
    assert cli.main(args) == 0 and time.perf_counter() - start < 0.5
    assert capsys.readouterr().out.startswith("OK tiny/proto v2")
    cache.install(_verified(_version(3)))  # a damaged table is rewritten, not fatal
    assert cache.trusted_version("tiny", "proto") == 3


def test_load_newest_skips_a_signed_bundle_that_does_not_load(tmp_path: Path) -> None:
    cache = _cache_with_good_v2(tmp_path / "cache")
    broken = signed_bundle(PRIVATE, b"signed, hashed, not ONNX", manifest(2))
    write_bundle(broken, cache.root / hashlib.sha256(broken.onnx).hexdigest())
    assert cache.load_newest("proto", PUBLIC).model_version == 2


def test_trusted_version_still_refuses_older_entries(tmp_path: Path) -> None:
    cache = _cache_with_good_v2(tmp_path / "cache")
    v2 = cache.path(_verified(_version(2)).manifest.onnx_sha256)
    _model_to_dev_zero(v2)  # the trusted newest is damaged: v1 would be a rollback
    with pytest.raises(VerificationError, match="no verified 'proto' model"):
        cache.load_newest("proto", PUBLIC)


def test_install_replaces_a_damaged_entry(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "cache")
    verified = _verified(_version(1))
    entry = cache.path(verified.manifest.onnx_sha256)
    entry.symlink_to("/dev")
    assert cache.install(verified) == entry and not entry.is_symlink()
    assert cache.latest("proto", PUBLIC) is not None
