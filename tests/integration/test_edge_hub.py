"""Model hub over gRPC + TLS on loopback: pull, verify, cache, refuse."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import pytest
from cryptography.hazmat.primitives import serialization

from client.edge import cli
from client.edge.hub_client import HubClient, HubError, ModelCache, pull
from client.edge.verify import RollbackError, VerificationError
from free_common import signing, tls
from free_common.export.manifest import bundle_dir_name, sign_manifest, write_bundle
from free_common.proto.v1 import export_pb2, hub_pb2, hub_pb2_grpc
from server import hub
from tests.edge_bundles import TinyGraph, tiny_model
from tests.edge_bundles import manifest as tiny_manifest

pytestmark = pytest.mark.integration

PEM, RAW = signing.generate_keypair()
PRIVATE, PUBLIC = signing.load_private_key(PEM), signing.load_public_key(RAW)


def _model_bytes(version: int) -> bytes:
    """A loadable ONNX model of ~200 KB (several 64 KiB chunks), different for each version."""
    return tiny_model(TinyGraph(version=version, padding_floats=50_000))


def _publish(
    export_dir: Path, version: int, variant: str = "proto", onnx_bytes: bytes | None = None
) -> export_pb2.ExportManifest:
    m = tiny_manifest(version, variant)
    m.model_name = "free-conv4"
    data = _model_bytes(version) if onnx_bytes is None else onnx_bytes
    bundle = sign_manifest(m, data, PRIVATE)
    manifest = export_pb2.ExportManifest.FromString(bundle.manifest)
    write_bundle(bundle, export_dir / bundle_dir_name(manifest))
    return manifest


@pytest.fixture(scope="module")
def certs() -> dict[str, bytes]:
    ca_key, ca_cert = tls.make_ca("free-fed test CA")
    key, cert = tls.make_server_cert(ca_key, ca_cert, ["127.0.0.1", "localhost"])
    _, other_ca = tls.make_ca("someone else")
    return {"ca": ca_cert, "key": key, "cert": cert, "other_ca": other_ca}


@pytest.fixture
def running_hub(tmp_path: Path, certs: dict[str, bytes]) -> Iterator[tuple[str, Path]]:
    export_dir = tmp_path / "exports"
    _publish(export_dir, 1)
    _publish(export_dir, 2)
    _publish(export_dir, 1, variant="protomaml")
    server, port = hub.serve(export_dir, cert_pem=certs["cert"], key_pem=certs["key"])
    try:
        yield f"localhost:{port}", export_dir
    finally:
        server.stop(grace=None)


def test_list_versions_newest_first(running_hub: tuple[str, Path], certs: dict[str, bytes]) -> None:
    with HubClient(running_hub[0], certs["ca"]) as client:
        versions = client.list_versions("proto")
        everything = client.list_versions()
    assert [v.model_version for v in versions] == [2, 1]
    assert len(everything) == 3


def test_pull_verifies_caches_and_does_not_download_twice(
    running_hub: tuple[str, Path],
    certs: dict[str, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare
    cache = ModelCache(tmp_path / "cache")
    downloads: list[str] = []
    original = HubClient.download

    def counting(self: HubClient, sha256: str, size: int) -> bytes:
        downloads.append(sha256)
        return original(self, sha256, size)

    monkeypatch.setattr(HubClient, "download", counting)
    # Execute
    with HubClient(running_hub[0], certs["ca"]) as client:
        first = pull(client, cache, PUBLIC, "proto")
        second = pull(client, cache, PUBLIC, "proto")
    # Assert
    assert first.downloaded and not second.downloaded and len(downloads) == 1
    assert first.verified.manifest.model_version == 2
    assert first.path.name == hashlib.sha256(_model_bytes(2)).hexdigest()
    assert (first.path / "model.onnx").read_bytes() == _model_bytes(2)
    assert cache.latest("proto", PUBLIC) is not None


def test_wrong_ca_is_refused(running_hub: tuple[str, Path], certs: dict[str, bytes]) -> None:
    with HubClient(running_hub[0], certs["other_ca"], timeout=5) as client, pytest.raises(HubError):
        client.list_versions()


def test_wrong_signing_key_is_refused(
    running_hub: tuple[str, Path], certs: dict[str, bytes], tmp_path: Path
) -> None:
    _, other = signing.generate_keypair()
    with HubClient(running_hub[0], certs["ca"]) as client, pytest.raises(VerificationError):
        pull(client, ModelCache(tmp_path / "c"), signing.load_public_key(other), "proto")
    assert not any((tmp_path / "c").iterdir())


def test_rollback_to_older_version_is_refused(tmp_path: Path, certs: dict[str, bytes]) -> None:
    new_dir, old_dir, cache = tmp_path / "new", tmp_path / "old", ModelCache(tmp_path / "cache")
    _publish(new_dir, 2)
    _publish(old_dir, 1)
    for export_dir, expect_ok in ((new_dir, True), (old_dir, False)):
        server, port = hub.serve(export_dir, cert_pem=certs["cert"], key_pem=certs["key"])
        try:
            with HubClient(f"127.0.0.1:{port}", certs["ca"]) as client:
                if expect_ok:
                    pull(client, cache, PUBLIC, "proto")
                else:
                    with pytest.raises(RollbackError, match="rollback refused"):
                        pull(client, cache, PUBLIC, "proto")
        finally:
            server.stop(grace=None)


class _TruncatingHub(hub.HubServicer):
    def StreamModel(self, request, context):  # type: ignore[no-untyped-def]
        yield next(iter(super().StreamModel(request, context)))


def test_partial_download_is_never_cached(tmp_path: Path, certs: dict[str, bytes]) -> None:
    _publish(tmp_path / "exports", 1)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    hub_pb2_grpc.add_ModelHubServicer_to_server(
        _TruncatingHub(hub.ExportStore(tmp_path / "exports")), server
    )
    port = server.add_secure_port(
        "127.0.0.1:0", grpc.ssl_server_credentials([(certs["key"], certs["cert"])])
    )
    server.start()
    cache = ModelCache(tmp_path / "cache")
    try:
        with HubClient(f"127.0.0.1:{port}", certs["ca"]) as client, pytest.raises(HubError):
            pull(client, cache, PUBLIC, "proto")
    finally:
        server.stop(grace=None)
    assert list(cache.root.iterdir()) == []


def test_hub_skips_bundle_whose_model_was_altered(tmp_path: Path) -> None:
    manifest = _publish(tmp_path, 1)
    model = tmp_path / bundle_dir_name(manifest) / "model.onnx"
    model.write_bytes(model.read_bytes()[:-1])
    assert hub.ExportStore(tmp_path).versions() == []


def test_unknown_variant_and_sha_are_not_found(
    running_hub: tuple[str, Path], certs: dict[str, bytes]
) -> None:
    with HubClient(running_hub[0], certs["ca"]) as client:
        with pytest.raises(HubError, match="NOT_FOUND"):
            client.latest_manifest("nope")
        with pytest.raises(HubError, match="NOT_FOUND"):
            client.download("0" * 64, 10)


KEY_FILES = {  # every format the project writes a public key in
    "raw": RAW,
    "hex": (RAW.hex() + "\n").encode(),  # server-ed25519.pub.hex
    "pem": PUBLIC.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ),
}


@pytest.mark.parametrize("key_format", list(KEY_FILES))
def test_cli_pull_and_versions(
    running_hub: tuple[str, Path],
    certs: dict[str, bytes],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    key_format: str,
) -> None:
    (tmp_path / "ca.pem").write_bytes(certs["ca"])
    (tmp_path / "key.pub").write_bytes(KEY_FILES[key_format])
    common = ["--hub", running_hub[0], "--ca", str(tmp_path / "ca.pem")]
    pull_args = ["pull", *common, "--cache", str(tmp_path / "cache")]
    pull_args += ["--public-key", str(tmp_path / "key.pub")]
    assert cli.main(pull_args) == 0
    assert cli.main(pull_args) == 0
    assert cli.main(["versions", *common]) == 0
    out = capsys.readouterr().out
    assert "downloaded: free-conv4/proto v2" in out and "already cached" in out
    assert out.count("free-conv4\t") == 3


def test_chunks_are_at_most_64_kib(running_hub: tuple[str, Path], certs: dict[str, bytes]) -> None:
    channel = grpc.secure_channel(running_hub[0], grpc.ssl_channel_credentials(certs["ca"]))
    stub = hub_pb2_grpc.ModelHubStub(channel)
    sha = hashlib.sha256(_model_bytes(2)).hexdigest()
    chunks = list(stub.StreamModel(hub_pb2.StreamModelRequest(onnx_sha256=sha), timeout=10))
    channel.close()
    assert len(chunks) > 1 and max(len(c.data) for c in chunks) <= 64 * 1024
    assert b"".join(c.data for c in chunks) == _model_bytes(2)


def test_tampered_cached_copy_is_replaced(
    running_hub: tuple[str, Path], certs: dict[str, bytes], tmp_path: Path
) -> None:
    cache = ModelCache(tmp_path / "cache")
    with HubClient(running_hub[0], certs["ca"]) as client:
        first = pull(client, cache, PUBLIC, "proto")
        model = first.path / "model.onnx"
        model.write_bytes(b"x" + model.read_bytes()[1:])
        assert cache.latest("proto", PUBLIC) is None
        again = pull(client, cache, PUBLIC, "proto")
    assert again.downloaded and (again.path / "model.onnx").read_bytes() == _model_bytes(2)


def test_signed_model_that_does_not_load_is_not_cached(
    tmp_path: Path, certs: dict[str, bytes]
) -> None:
    good_dir, bad_dir, cache = tmp_path / "good", tmp_path / "bad", ModelCache(tmp_path / "c")
    _publish(good_dir, 2)
    _publish(bad_dir, 3, onnx_bytes=tiny_model(TinyGraph(version=3, output_name="scores")))
    for export_dir, expect_ok in ((good_dir, True), (bad_dir, False)):
        server, port = hub.serve(export_dir, cert_pem=certs["cert"], key_pem=certs["key"])
        try:
            with HubClient(f"127.0.0.1:{port}", certs["ca"]) as client:
                if expect_ok:
                    pull(client, cache, PUBLIC, "proto")
                else:
                    with pytest.raises(VerificationError, match="does not load"):
                        pull(client, cache, PUBLIC, "proto")
        finally:
            server.stop(grace=None)
    # the device keeps serving v2: v3 was neither cached nor trusted
    assert cache.trusted_version("free-conv4", "proto") == 2
    assert cache.load_newest("proto", PUBLIC).model_version == 2


def test_cached_copy_pointing_at_dev_zero_is_replaced(
    running_hub: tuple[str, Path], certs: dict[str, bytes], tmp_path: Path
) -> None:
    cache = ModelCache(tmp_path / "cache")
    with HubClient(running_hub[0], certs["ca"]) as client:
        first = pull(client, cache, PUBLIC, "proto")
        (first.path / "model.onnx").unlink()
        (first.path / "model.onnx").symlink_to("/dev/zero")
        again = pull(client, cache, PUBLIC, "proto")
    assert again.downloaded and (again.path / "model.onnx").read_bytes() == _model_bytes(2)
