"""Pull signed exports from the model hub (gRPC over TLS) into a content-addressed cache.

Cache layout: ``<root>/<onnx sha256>/{model.onnx, manifest.binpb, manifest.sig}`` plus
``<root>/trusted.json`` (highest version accepted per model and variant, for anti-rollback).
A bundle enters the cache only after the whole model was received, verified and loaded
(:func:`client.edge.runtime.open_session`), through an atomic rename of a temporary
directory, so partial downloads never look cached. A damaged entry (missing, hostile or
unverifiable files) is skipped and reported; the newest good bundle is used.
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

from client.edge.runtime import EdgeModel, open_session
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
from free_common.files import MissingFileError, UnreadableFileError, read_regular_file
from free_common.proto.v1 import hub_pb2, hub_pb2_grpc

__all__ = [
    "CacheScan",
    "HubClient",
    "HubError",
    "ModelCache",
    "PullResult",
    "SkippedEntry",
    "pull",
]

logger = logging.getLogger(__name__)

MAX_TRUST_TABLE_BYTES = 64 * 1024
_HEX = frozenset("0123456789abcdef")


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


@dataclass(frozen=True)
class SkippedEntry:
    """A cache entry that was not used, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class CacheScan:
    """Outcome of :meth:`ModelCache.scan`.

    Attributes:
        bundles: verified bundles of the variant at or above the trusted version, newest first.
        skipped: damaged entries (each also logged as a warning).
    """

    bundles: list[VerifiedModel]
    skipped: list[SkippedEntry]


def _is_digest(name: str) -> bool:
    return len(name) == 64 and set(name) <= _HEX


def _discard(path: Path) -> None:
    """Remove a cache entry of any kind (directory, file, symlink: never what it points to)."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


class ModelCache:
    """Content-addressed store of verified bundles.

    Args:
        root: cache directory (created if missing).

    Raises:
        VerificationError: ``root`` cannot be used as a directory.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise VerificationError(f"cache {self.root} is unusable: {err}") from err

    def path(self, sha256: str) -> Path:
        """Directory of the bundle whose model hashes to ``sha256``."""
        if not _is_digest(sha256):
            raise VerificationError(f"not a lower-case SHA-256 hex digest: {sha256!r}")
        return self.root / sha256

    def install(self, verified: VerifiedModel) -> Path:
        """Write a verified bundle atomically (replacing a damaged entry); return its directory."""
        final = self.path(verified.manifest.onnx_sha256)
        if os.path.lexists(final) and not self._holds(final, verified):
            logger.warning("replacing damaged cache entry %s", final.name[:12])
            _discard(final)
        if not os.path.lexists(final):
            tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=self.root))
            try:
                for name, data in self._files(verified):
                    (tmp / name).write_bytes(data)
                os.replace(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        self._raise_trusted(verified)
        return final

    @staticmethod
    def _files(verified: VerifiedModel) -> tuple[tuple[str, bytes], ...]:
        return (
            (MODEL_FILE, verified.onnx_bytes),
            (MANIFEST_FILE, verified.manifest_bytes),
            (SIGNATURE_FILE, verified.signature),
        )

    def _holds(self, folder: Path, verified: VerifiedModel) -> bool:
        """Whether ``folder`` holds exactly the three files of ``verified``."""
        try:
            return all(
                read_regular_file(folder / name, len(data)) == data
                for name, data in self._files(verified)
            )
        except UnreadableFileError:
            return False

    def _trusted_file(self) -> Path:
        return self.root / "trusted.json"

    def _trust_table(self) -> dict[str, int]:
        """The trusted-version table; empty, with a warning, when it is damaged.

        A damaged table gives no protection a deleted one would not, so it is not allowed to
        stop the device: :meth:`scan` then still returns the newest bundle that verifies.
        """
        path = self._trusted_file()
        try:
            table = json.loads(read_regular_file(path, MAX_TRUST_TABLE_BYTES))
            if not isinstance(table, dict) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in table.values()
            ):
                raise ValueError("not an object of integer versions")
        except MissingFileError:
            return {}
        except (UnreadableFileError, ValueError) as err:  # JSONDecodeError is a ValueError
            logger.warning("ignoring damaged trust table %s: %s", path, err)
            return {}
        return {str(k): int(v) for k, v in table.items()}

    def trusted_version(self, model_name: str, variant: str) -> int:
        """Highest version of ``model_name/variant`` accepted so far (0 if none)."""
        return self._trust_table().get(f"{model_name}/{variant}", 0)

    def _raise_trusted(self, verified: VerifiedModel) -> None:
        m = verified.manifest
        table = self._trust_table()
        key = f"{m.model_name}/{m.variant}"
        table[key] = max(table.get(key, 0), int(m.model_version))
        fd, tmp = tempfile.mkstemp(prefix=".trusted-", dir=self.root)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(json.dumps(table, sort_keys=True))
            os.replace(tmp, self._trusted_file())
        finally:
            Path(tmp).unlink(missing_ok=True)

    def scan(
        self, variant: str, public_key: Ed25519PublicKey, *, min_version: int = 0
    ) -> CacheScan:
        """Verify every entry; keep the bundles of ``variant`` not older than trusted.

        An entry is skipped (and reported) when its files are missing, hostile or fail
        verification, or when it is not named after the SHA-256 of its model.

        Raises:
            VerificationError: the cache directory cannot be listed.
        """
        try:
            names = sorted(p.name for p in self.root.iterdir())
        except OSError as err:
            raise VerificationError(f"cannot list cache {self.root}: {err}") from err
        bundles, skipped = [], []
        table = self._trust_table()
        for name in filter(_is_digest, names):
            folder = self.root / name
            try:
                verified = read_bundle(folder, public_key)
                held = verified.manifest.onnx_sha256
                if held != name:
                    raise VerificationError(f"named {name[:12]} but holds model {held[:12]}")
            except VerificationError as err:
                logger.warning("skipping cached bundle %s: %s", name[:12], err)
                skipped.append(SkippedEntry(folder, str(err)))
                continue
            m = verified.manifest
            floor = max(min_version, table.get(f"{m.model_name}/{m.variant}", 0))
            if m.variant == variant and m.model_version >= floor:
                bundles.append(verified)
        bundles.sort(key=lambda v: (v.manifest.model_version, v.manifest.created_unix_ms))
        return CacheScan(bundles[::-1], skipped)

    def latest(self, variant: str, public_key: Ed25519PublicKey) -> VerifiedModel | None:
        """The newest cached bundle of ``variant`` that still verifies (None if none)."""
        bundles = self.scan(variant, public_key).bundles
        return bundles[0] if bundles else None

    def load_newest(
        self,
        variant: str,
        public_key: Ed25519PublicKey,
        *,
        min_version: int = 0,
        threads: int = 2,
    ) -> EdgeModel:
        """The newest cached bundle of ``variant`` that verifies and loads.

        Raises:
            VerificationError: no entry of ``variant`` verifies and loads (reasons listed).
        """
        scan = self.scan(variant, public_key, min_version=min_version)
        reasons = [f"{s.path.name[:12]}: {s.reason}" for s in scan.skipped]
        for verified in scan.bundles:
            try:
                return EdgeModel(verified, threads)
            except VerificationError as err:
                logger.warning(
                    "skipping cached bundle %s: %s", verified.manifest.onnx_sha256[:12], err
                )
                reasons.append(f"{verified.manifest.onnx_sha256[:12]}: {err}")
        detail = "; ".join(reasons) if reasons else "none cached"
        raise VerificationError(f"no verified {variant!r} model in cache {self.root} ({detail})")


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
    downloaded when no verified copy with the same SHA-256 is cached (a damaged copy is
    replaced). A model that verifies but does not load (:func:`open_session`) is never
    cached, so the cache keeps serving its newest good model.

    Raises:
        VerificationError: the manifest or model fails verification (incl. rollback) or
            the model does not load.
        HubError: network or stream failure.
    """
    manifest_bytes, signature = client.latest_manifest(variant)
    manifest = verify_manifest(manifest_bytes, signature, public_key, min_version=min_version)
    floor = max(min_version, cache.trusted_version(manifest.model_name, manifest.variant))
    manifest = verify_manifest(manifest_bytes, signature, public_key, min_version=floor)
    cached = cache.path(manifest.onnx_sha256)
    if os.path.lexists(cached):
        try:
            verified = read_bundle(cached, public_key, min_version=floor)
            open_session(verified, threads=1)
            logger.info("model %s already cached and verified", manifest.onnx_sha256[:12])
            return PullResult(cached, verified, downloaded=False)
        except VerificationError as err:
            logger.warning("cached copy failed verification (%s); downloading again", err)
            _discard(cached)
    data = client.download(manifest.onnx_sha256, manifest.onnx_size)
    verified = verify_bundle(data, manifest_bytes, signature, public_key, min_version=floor)
    try:
        open_session(verified, threads=1)
    except VerificationError as err:
        raise VerificationError(
            f"{manifest.model_name}/{manifest.variant} v{manifest.model_version} from the hub "
            f"is signed but does not load; cache left as it was: {err}"
        ) from err
    path = cache.install(verified)
    logger.info(
        "pulled %s/%s v%d into %s", manifest.model_name, variant, manifest.model_version, path
    )
    return PullResult(path, verified, downloaded=True)
