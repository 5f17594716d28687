"""The hub reads the bundles it serves with bounded regular-file reads (server/hub.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from free_common import signing
from free_common.export.manifest import bundle_dir_name, sign_manifest, write_bundle
from free_common.proto.v1 import export_pb2, hub_pb2
from server import hub
from tests.edge_bundles import TinyGraph, manifest, tiny_model

PRIVATE = signing.load_private_key(signing.generate_keypair()[0])


def _publish(export_dir: Path, version: int) -> Path:
    m = manifest(version, "proto")
    bundle = sign_manifest(m, tiny_model(TinyGraph(version=version)), PRIVATE)
    parsed = export_pb2.ExportManifest.FromString(bundle.manifest)
    return write_bundle(bundle, export_dir / bundle_dir_name(parsed))


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)  # nobody ever writes: a plain read blocks forever


def _dev_zero(path: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")  # stat says 0 bytes; a plain read never ends


def _grown(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"\0" * (hub.MAX_MANIFEST_BYTES + 1))


HOSTILE: dict[str, tuple[str, Callable[[Path], None]]] = {
    "model FIFO": (hub.MODEL_FILE, _fifo),
    "signature FIFO": (hub.SIGNATURE_FILE, _fifo),
    "manifest /dev/zero": (hub.MANIFEST_FILE, _dev_zero),
    "model /dev/zero": (hub.MODEL_FILE, _dev_zero),
    "oversized manifest": (hub.MANIFEST_FILE, _grown),
}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_files_in_the_export_directory_are_skipped_at_once(
    tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    _publish(tmp_path, 1)
    name, make_hostile = HOSTILE[case]
    make_hostile(_publish(tmp_path, 2) / name)
    store = hub.ExportStore(tmp_path)
    assert [s.manifest.model_version for s in store.versions()] == [1]
    assert "skipping bundle" in caplog.text


def test_the_hub_limits_are_the_edge_limits() -> None:
    from client.edge import verify

    assert hub.MAX_MODEL_BYTES == verify.MAX_MODEL_BYTES
    assert hub.MAX_MANIFEST_BYTES == verify.MAX_MANIFEST_BYTES


class _Aborted(Exception):
    pass


class _Context:
    def abort(self, code: object, details: str) -> None:
        raise _Aborted(f"{code}: {details}")


@pytest.mark.timeout(20)
def test_a_model_replaced_after_indexing_is_not_streamed(tmp_path: Path) -> None:
    folder = _publish(tmp_path, 1)
    servicer = hub.HubServicer(hub.ExportStore(tmp_path))
    sha = servicer.store.versions()[0].manifest.onnx_sha256
    request = hub_pb2.StreamModelRequest(onnx_sha256=sha)
    data = b"".join(c.data for c in servicer.StreamModel(request, _Context()))
    assert data == (folder / hub.MODEL_FILE).read_bytes()
    _fifo(folder / hub.MODEL_FILE)
    with pytest.raises(_Aborted, match="UNAVAILABLE.*is a named pipe"):
        list(servicer.StreamModel(request, _Context()))
    (folder / hub.MODEL_FILE).unlink()
    (folder / hub.MODEL_FILE).write_bytes(data[:-1] + b"x")
    with pytest.raises(_Aborted, match="no longer match the manifest"):
        list(servicer.StreamModel(request, _Context()))
