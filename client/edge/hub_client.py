"""Pull signed exports from the model hub (gRPC over TLS) into a content-addressed cache.

Cache layout: ``<root>/<onnx sha256>/{model.onnx, manifest.binpb, manifest.sig}`` plus
``<root>/trusted.json`` (highest version accepted per model and variant, for anti-rollback).
A bundle enters the cache only after the whole model was received and verified, through an
atomic rename of a temporary directory, so partial downloads never look cached.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import grpc  # type: ignore[import-untyped]
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from client.edge.verify import (
    MANIFEST_FILE,
    MAX_MODEL_BYTES,
    MODEL_FILE,
    SIGNATURE_FILE,
    VerificationError,
    VerifiedModel,
    read_bundle,
    verify_bundle,
    verify_manifest,
)
from free_common.proto.v1 import hub_pb2, hub_pb2_grpc

__all__ = ["HubClient", "HubError", "ModelCache", "PullResult", "pull"]

logger = logging.getLogger(__name__)


class HubError(RuntimeError):
    """The hub is unreachable, refused the request or sent a malformed stream."""


class HubClient:
    """Thin typed wrapper over the ModelHub stub on a TLS channel.

    Args:
        target: ``host:port`` of the hub.
        root_certificates: PEM of the CA that signed the hub's certificate.
        timeout: seconds per call.
    """

    def __init__(self, target: str, root_certificates: bytes, *, timeout: float = 30.0) -> None:
        credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        self._channel = grpc.secure_channel(target, credentials)
        self._stub = hub_pb2_grpc.ModelHubStub(self._channel)
        self.target = target
        self.timeout = timeout

    def __enter__(self) -> HubClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def _fail(self, what: str, err: grpc.RpcError) -> HubError:
        return HubError(f"{what} from {self.target} failed: {err.code().name}: {err.details()}")

    def latest_manifest(self, variant: str) -> tuple[bytes, bytes]:
        """(manifest bytes, signature) of the newest export of ``variant``."""
        try:
            reply = self._stub.GetLatestManifest(
                hub_pb2.GetLatestManifestRequest(variant=variant), timeout=self.timeout
            )
        except grpc.RpcError as err:
            raise self._fail("GetLatestManifest", err) from err
        return bytes(reply.manifest), bytes(reply.signature)

    def list_versions(self, variant: str = "") -> list[hub_pb2.VersionInfo]:
        """Every export the hub serves (of ``variant``), newest first."""
        try:
            reply = self._stub.ListVersions(
                hub_pb2.ListVersionsRequest(variant=variant), timeout=self.timeout
            )
        except grpc.RpcError as err:
            raise self._fail("ListVersions", err) from err
        return list(reply.versions)

    def download(self, sha256: str, size: int) -> bytes:
        """The ONNX bytes named by ``sha256``, which must total exactly ``size`` bytes.

        Raises:
            HubError: RPC failure, out-of-order chunk, or a stream shorter/longer than ``size``.
        """
        if size > MAX_MODEL_BYTES:
            raise HubError(f"refusing a {size}-byte model (limit {MAX_MODEL_BYTES})")
        buffer = bytearray()
        try:
            for chunk in self._stub.StreamModel(
                hub_pb2.StreamModelRequest(onnx_sha256=sha256), timeout=self.timeout
            ):
                if chunk.offset != len(buffer) or chunk.total_size != size:
                    raise HubError(f"malformed chunk at offset {chunk.offset} for {sha256[:12]}")
                buffer += chunk.data
                if len(buffer) > size:
                    raise HubError(f"stream for {sha256[:12]} exceeds the signed size {size}")
        except grpc.RpcError as err:
            raise self._fail("StreamModel", err) from err
        if len(buffer) != size:
            raise HubError(f"stream for {sha256[:12]} ended at {len(buffer)} of {size} bytes")
        return bytes(buffer)


class ModelCache:
    """Content-addressed store of verified bundles.

    Args:
        root: cache directory (created if missing).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        """Directory of the bundle whose model hashes to ``sha256``."""
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise VerificationError(f"not a lower-case SHA-256 hex digest: {sha256!r}")
        return self.root / sha256

    def install(self, verified: VerifiedModel) -> Path:
        """Write a verified bundle atomically; return its directory."""
        final = self.path(verified.manifest.onnx_sha256)
        if final.exists():
            return final
        tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=self.root))
        try:
            for name, data in (
                (MODEL_FILE, verified.onnx_bytes),
                (MANIFEST_FILE, verified.manifest_bytes),
                (SIGNATURE_FILE, verified.signature),
            ):
                (tmp / name).write_bytes(data)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self._raise_trusted(verified)
        return final

    def _trusted_file(self) -> Path:
        return self.root / "trusted.json"

    def trusted_version(self, model_name: str, variant: str) -> int:
        """Highest version of ``model_name/variant`` accepted so far (0 if none)."""
        path = self._trusted_file()
        table = json.loads(path.read_text()) if path.exists() else {}
        return int(table.get(f"{model_name}/{variant}", 0))

    def _raise_trusted(self, verified: VerifiedModel) -> None:
        m = verified.manifest
        path = self._trusted_file()
        table = json.loads(path.read_text()) if path.exists() else {}
        key = f"{m.model_name}/{m.variant}"
        table[key] = max(int(table.get(key, 0)), int(m.model_version))
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(table, sort_keys=True))
        os.replace(tmp, path)

    def latest(self, variant: str, public_key: Ed25519PublicKey) -> VerifiedModel | None:
        """The newest cached bundle of ``variant`` that still verifies (None if none)."""
        best: VerifiedModel | None = None
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and len(p.name) == 64):
            try:
                verified = read_bundle(folder, public_key)
            except VerificationError as err:
                logger.warning("ignoring cached bundle %s: %s", folder.name[:12], err)
                continue
            m = verified.manifest
            trusted = self.trusted_version(m.model_name, m.variant)
            is_candidate = m.variant == variant and m.model_version >= trusted
            if is_candidate and (best is None or m.model_version > best.manifest.model_version):
                best = verified
        return best


@dataclass(frozen=True)
class PullResult:
    """Outcome of :func:`pull`."""

    path: Path
    verified: VerifiedModel
    downloaded: bool


def pull(
    client: HubClient,
    cache: ModelCache,
    public_key: Ed25519PublicKey,
    variant: str,
    *,
    min_version: int = 0,
) -> PullResult:
    """Fetch the newest export of ``variant``, verify it and cache it.

    The manifest is verified first (signature, key, anti-rollback against both
    ``min_version`` and the highest version this cache already trusts); the model is only
    downloaded when no verified copy with the same SHA-256 is cached.

    Raises:
        VerificationError: the manifest or model fails verification (incl. rollback).
        HubError: network or stream failure.
    """
    manifest_bytes, signature = client.latest_manifest(variant)
    manifest = verify_manifest(manifest_bytes, signature, public_key, min_version=min_version)
    floor = max(min_version, cache.trusted_version(manifest.model_name, manifest.variant))
    manifest = verify_manifest(manifest_bytes, signature, public_key, min_version=floor)
    cached = cache.path(manifest.onnx_sha256)
    if cached.exists():
        try:
            verified = read_bundle(cached, public_key, min_version=floor)
            logger.info("model %s already cached and verified", manifest.onnx_sha256[:12])
            return PullResult(cached, verified, downloaded=False)
        except VerificationError as err:
            logger.warning("cached copy failed verification (%s); downloading again", err)
            shutil.rmtree(cached)
    data = client.download(manifest.onnx_sha256, manifest.onnx_size)
    verified = verify_bundle(data, manifest_bytes, signature, public_key, min_version=floor)
    path = cache.install(verified)
    logger.info(
        "pulled %s/%s v%d into %s", manifest.model_name, variant, manifest.model_version, path
    )
    return PullResult(path, verified, downloaded=True)
