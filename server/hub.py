"""Model hub: serve signed ONNX exports to edge devices over gRPC with TLS.

The hub reads bundles (``model.onnx``, ``manifest.binpb``, ``manifest.sig``) from an export
directory, and serves the manifest bytes and signature exactly as written, so edges verify
what the exporter signed. It binds 127.0.0.1 by default and refuses to start without TLS.

Usage::

    python -m server.hub --export-dir runs/exports --cert server.pem --key server.key
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import signal
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError

from free_common.files import UnreadableFileError, read_regular_file
from free_common.proto.v1 import export_pb2, hub_pb2, hub_pb2_grpc
from free_common.signing import SIGNATURE_BYTES

__all__ = ["CHUNK_BYTES", "ExportStore", "HubServicer", "StoredExport", "main", "serve"]

logger = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
MODEL_FILE, MANIFEST_FILE, SIGNATURE_FILE = "model.onnx", "manifest.binpb", "manifest.sig"
# The largest files an edge accepts (client/edge/verify.py); the hub reads no more.
MAX_MODEL_BYTES = 256 * 1024 * 1024
MAX_MANIFEST_BYTES = 64 * 1024


@dataclass(frozen=True)
class StoredExport:
    """One bundle on disk, with its manifest parsed (for indexing only; edges verify)."""

    directory: Path
    manifest: export_pb2.ExportManifest
    manifest_bytes: bytes
    signature: bytes

    @property
    def model_path(self) -> Path:
        """Path of the ONNX file."""
        return self.directory / MODEL_FILE

    def info(self) -> hub_pb2.VersionInfo:
        """Summary for ListVersions."""
        m = self.manifest
        return hub_pb2.VersionInfo(
            model_name=m.model_name,
            variant=m.variant,
            model_version=m.model_version,
            onnx_sha256=m.onnx_sha256,
            onnx_size=m.onnx_size,
            created_unix_ms=m.created_unix_ms,
        )


class ExportStore:
    """Index of the bundles below an export directory (rescanned on :meth:`refresh`).

    Bundles whose files are missing, are not regular files (a named pipe, ``/dev/zero``) or
    exceed the edge's size limits, whose manifest does not parse or whose ONNX file does not
    match the manifest's size and hash are skipped with a warning. Every file is read with a
    bounded regular-file read (:func:`free_common.files.read_regular_file`).
    """

    def __init__(self, export_dir: str | Path) -> None:
        self.export_dir = Path(export_dir)
        if not self.export_dir.is_dir():
            raise FileNotFoundError(f"export directory not found: {self.export_dir}")
        self._exports: list[StoredExport] = []
        self.refresh()

    def refresh(self) -> None:
        """Rescan the export directory."""
        found = [self._load(p.parent) for p in sorted(self.export_dir.rglob(MANIFEST_FILE))]
        self._exports = [s for s in found if s is not None]
        logger.info("hub serves %d export(s) from %s", len(self._exports), self.export_dir)

    @staticmethod
    def _load(directory: Path) -> StoredExport | None:
        try:
            manifest_bytes = read_regular_file(directory / MANIFEST_FILE, MAX_MANIFEST_BYTES)
            signature = read_regular_file(directory / SIGNATURE_FILE, SIGNATURE_BYTES)
            manifest = export_pb2.ExportManifest.FromString(manifest_bytes)
            model = read_regular_file(directory / MODEL_FILE, MAX_MODEL_BYTES)
        except (UnreadableFileError, DecodeError) as err:
            logger.warning("skipping bundle %s: %s", directory, err)
            return None
        if len(model) != manifest.onnx_size or hashlib.sha256(model).hexdigest() != (
            manifest.onnx_sha256
        ):
            logger.warning("skipping bundle %s: model does not match its manifest", directory)
            return None
        return StoredExport(directory, manifest, manifest_bytes, signature)

    def versions(self, variant: str = "") -> list[StoredExport]:
        """Exports (of ``variant`` if given), newest version first."""
        matching = [s for s in self._exports if variant in ("", s.manifest.variant)]
        return sorted(
            matching,
            key=lambda s: (s.manifest.model_version, s.manifest.created_unix_ms),
            reverse=True,
        )

    def by_sha256(self, sha256: str) -> StoredExport | None:
        """The export whose ONNX bytes hash to ``sha256`` (lower-case hex)."""
        return next((s for s in self._exports if s.manifest.onnx_sha256 == sha256), None)


class HubServicer(hub_pb2_grpc.ModelHubServicer):  # type: ignore[misc]
    """gRPC handlers over an :class:`ExportStore`."""

    def __init__(self, store: ExportStore) -> None:
        self.store = store

    def GetLatestManifest(
        self, request: hub_pb2.GetLatestManifestRequest, context: grpc.ServicerContext
    ) -> export_pb2.SignedManifest:
        """Signed manifest of the newest version of ``request.variant``."""
        versions = self.store.versions(request.variant)
        if not versions:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no export of variant {request.variant!r}")
        latest = versions[0]
        return export_pb2.SignedManifest(manifest=latest.manifest_bytes, signature=latest.signature)

    def ListVersions(
        self, request: hub_pb2.ListVersionsRequest, context: grpc.ServicerContext
    ) -> hub_pb2.ListVersionsResponse:
        """Every export (of a variant), newest first."""
        del context
        return hub_pb2.ListVersionsResponse(
            versions=[s.info() for s in self.store.versions(request.variant)]
        )

    def StreamModel(
        self, request: hub_pb2.StreamModelRequest, context: grpc.ServicerContext
    ) -> Iterator[hub_pb2.ModelChunk]:
        """The ONNX bytes of the export named by SHA-256, in 64 KiB chunks.

        The file is read again (bounded, regular files only) and served only if it still
        hashes to the manifest's SHA-256.
        """
        stored = self.store.by_sha256(request.onnx_sha256)
        if stored is None:
            context.abort(
                grpc.StatusCode.NOT_FOUND, f"no model with sha256 {request.onnx_sha256!r}"
            )
            return
        total = stored.manifest.onnx_size
        try:  # the file may have been replaced since it was indexed: read it as warily
            data = read_regular_file(stored.model_path, total)
        except UnreadableFileError as err:
            data, detail = b"", str(err)
        else:
            detail = "its bytes no longer match the manifest"
        if hashlib.sha256(data).hexdigest() != stored.manifest.onnx_sha256:
            logger.warning("not serving %s: %s", stored.model_path, detail)
            context.abort(
                grpc.StatusCode.UNAVAILABLE, f"model changed since it was indexed: {detail}"
            )
            return
        for offset in range(0, total, CHUNK_BYTES):
            chunk = data[offset : offset + CHUNK_BYTES]
            yield hub_pb2.ModelChunk(offset=offset, data=chunk, total_size=total)


def serve(
    export_dir: str | Path,
    *,
    cert_pem: bytes,
    key_pem: bytes,
    host: str = "127.0.0.1",
    port: int = 0,
    workers: int = 4,
) -> tuple[grpc.Server, int]:
    """Start the hub with TLS; return the running server and the bound port.

    Args:
        export_dir: directory scanned for bundles.
        cert_pem: server certificate chain (PEM).
        key_pem: its private key (PEM).
        host: interface to bind (loopback by default).
        port: TCP port; 0 picks a free one.
        workers: handler threads.
    """
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    hub_pb2_grpc.add_ModelHubServicer_to_server(HubServicer(ExportStore(export_dir)), server)
    credentials = grpc.ssl_server_credentials([(key_pem, cert_pem)])
    bound = server.add_secure_port(f"{host}:{port}", credentials)
    if bound == 0:
        raise OSError(f"cannot bind {host}:{port}")
    server.start()
    logger.info("model hub listening on %s:%d (TLS)", host, bound)
    return server, bound


def main(argv: list[str] | None = None) -> int:
    """Run the hub until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m server.hub", description="Serve ONNX exports.")
    parser.add_argument("--export-dir", type=Path, required=True)
    parser.add_argument("--cert", type=Path, required=True, help="server certificate (PEM)")
    parser.add_argument("--key", type=Path, required=True, help="server private key (PEM)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50061)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server, _ = serve(
        args.export_dir,
        cert_pem=args.cert.read_bytes(),
        key_pem=args.key.read_bytes(),
        host=args.host,
        port=args.port,
    )
    signal.signal(signal.SIGTERM, lambda *_: server.stop(grace=2))
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        server.stop(grace=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
