"""Verify a signed export before anything parses the model.

Order of checks: signature over the manifest bytes as shipped (never re-serialised), then
the manifest itself (schema, key id, anti-rollback), then the size and SHA-256 of the ONNX
bytes. Only bytes that passed every check reach ONNX Runtime. Files are read with
:func:`free_common.files.read_regular_file` (regular files only, bounded), and every failure,
a missing or hostile file included, raises :class:`VerificationError`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import DecodeError

from free_common import signing
from free_common.files import MissingFileError, UnreadableFileError, read_regular_file
from free_common.proto.v1 import export_pb2

__all__ = [
    "MANIFEST_FILE",
    "MAX_KEY_FILE_BYTES",
    "MAX_MANIFEST_BYTES",
    "MAX_MODEL_BYTES",
    "MODEL_FILE",
    "SIGNATURE_FILE",
    "RollbackError",
    "VerificationError",
    "VerifiedModel",
    "load_public_key_file",
    "read_bundle",
    "read_limited",
    "verify_bundle",
    "verify_manifest",
]

logger = logging.getLogger(__name__)

# File names of a bundle directory (same as free_common.export.manifest, which imports torch).
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.binpb"
SIGNATURE_FILE = "manifest.sig"
SCHEMA_VERSION = 1
MAX_MODEL_BYTES = 256 * 1024 * 1024
MAX_MANIFEST_BYTES = 64 * 1024
MAX_KEY_FILE_BYTES = 4096  # a PEM public key is about 113 bytes


class VerificationError(ValueError):
    """The model, its manifest or its signature cannot be trusted."""


class RollbackError(VerificationError):
    """The manifest is genuine but older than a version already trusted."""


@dataclass(frozen=True)
class VerifiedModel:
    """ONNX bytes whose signed manifest checked out."""

    manifest: export_pb2.ExportManifest
    manifest_bytes: bytes
    signature: bytes
    onnx_bytes: bytes


def read_limited(path: str | Path, limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.

    Raises:
        VerificationError: missing, not a regular file (directory, device, FIFO, symlink
            loop), unreadable, or larger than ``limit``.
    """
    try:
        return read_regular_file(path, limit)
    except UnreadableFileError as err:
        raise VerificationError(str(err)) from err


def load_public_key_file(path: str | Path) -> Ed25519PublicKey:
    """Read a pinned public key (32 raw bytes, 64 hex digits, or PEM) from ``path``.

    Raises:
        VerificationError: the file is unreadable (see :func:`read_limited`) or holds no
            acceptable Ed25519 public key (small-order points included).
    """
    try:
        return signing.load_public_key(read_limited(path, MAX_KEY_FILE_BYTES))
    except signing.SignatureError as err:
        raise VerificationError(f"{path}: {err}") from err


def verify_manifest(
    manifest_bytes: bytes,
    signature: bytes,
    public_key: Ed25519PublicKey,
    *,
    min_version: int = 0,
) -> export_pb2.ExportManifest:
    """Check the signature over ``manifest_bytes`` and return the parsed manifest.

    Args:
        manifest_bytes: serialised ``ExportManifest`` exactly as received.
        signature: detached 64-byte Ed25519 signature.
        public_key: the pinned server key.
        min_version: refuse a ``model_version`` below this (anti-rollback).

    Raises:
        VerificationError: bad signature, wrong key, malformed manifest.
        RollbackError: ``model_version < min_version``.
    """
    if len(manifest_bytes) > MAX_MANIFEST_BYTES:
        raise VerificationError(f"manifest of {len(manifest_bytes)} bytes is too large")
    try:
        signing.verify(public_key, signature, manifest_bytes)
    except signing.SignatureError as err:
        raise VerificationError(f"manifest signature rejected: {err}") from err
    try:
        manifest = export_pb2.ExportManifest.FromString(manifest_bytes)
    except DecodeError as err:  # signed but unparsable: a server bug, still refuse
        raise VerificationError(f"signed manifest does not parse: {err}") from err
    expected_key = signing.key_id(public_key)
    if manifest.key_id != expected_key:
        raise VerificationError(
            f"manifest names key {manifest.key_id!r}, verified with {expected_key!r}"
        )
    if manifest.schema_version != SCHEMA_VERSION:
        raise VerificationError(f"unsupported manifest schema {manifest.schema_version}")
    if manifest.model_version < min_version:
        raise RollbackError(
            f"rollback refused: {manifest.model_name}/{manifest.variant} version "
            f"{manifest.model_version} is older than trusted version {min_version}"
        )
    if manifest.input.layout != "NCHW" or manifest.input.channels not in (1, 3):
        raise VerificationError(f"unsupported input spec in manifest: {manifest.input}")
    return manifest


def verify_bundle(
    onnx_bytes: bytes,
    manifest_bytes: bytes,
    signature: bytes,
    public_key: Ed25519PublicKey,
    *,
    min_version: int = 0,
) -> VerifiedModel:
    """Verify the manifest, then that ``onnx_bytes`` are exactly the ones it names.

    Raises:
        VerificationError: any check failed (see :func:`verify_manifest`), or the model bytes
            differ in size or SHA-256 from the signed manifest.
    """
    manifest = verify_manifest(manifest_bytes, signature, public_key, min_version=min_version)
    if len(onnx_bytes) != manifest.onnx_size:
        raise VerificationError(
            f"model is {len(onnx_bytes)} bytes, signed manifest says {manifest.onnx_size}"
        )
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    if not hmac.compare_digest(digest, manifest.onnx_sha256):
        raise VerificationError("model bytes do not match the SHA-256 in the signed manifest")
    logger.info(
        "verified %s/%s v%d (%s, key %s)",
        manifest.model_name,
        manifest.variant,
        manifest.model_version,
        digest[:12],
        manifest.key_id,
    )
    return VerifiedModel(manifest, manifest_bytes, signature, onnx_bytes)


def read_bundle(
    directory: str | Path, public_key: Ed25519PublicKey, *, min_version: int = 0
) -> VerifiedModel:
    """Read ``model.onnx``, ``manifest.binpb`` and ``manifest.sig`` and verify them.

    Raises:
        VerificationError: a file is missing or hostile (see :func:`read_limited`), or a
            check failed.
    """
    folder = Path(directory)
    try:
        manifest_bytes = read_regular_file(folder / MANIFEST_FILE, MAX_MANIFEST_BYTES)
        signature = read_regular_file(folder / SIGNATURE_FILE, signing.SIGNATURE_BYTES)
        onnx_bytes = read_regular_file(folder / MODEL_FILE, MAX_MODEL_BYTES)
    except MissingFileError as err:
        raise VerificationError(f"incomplete bundle in {folder}: {err}") from err
    except UnreadableFileError as err:
        raise VerificationError(f"bundle in {folder} refused: {err}") from err
    return verify_bundle(onnx_bytes, manifest_bytes, signature, public_key, min_version=min_version)
