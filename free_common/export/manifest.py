"""Build, sign and write the manifest that vouches for one ONNX export.

A bundle is a directory holding three files, all shipped as-is:

- ``model.onnx``: the ONNX bytes;
- ``manifest.binpb``: a serialised :class:`ExportManifest` (SHA-256 and size of the ONNX
  bytes plus metadata), written once and never re-serialised;
- ``manifest.sig``: the detached 64-byte Ed25519 signature over ``manifest.binpb``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from free_common import signing
from free_common.proto.v1 import export_pb2

__all__ = [
    "MANIFEST_FILE",
    "MODEL_FILE",
    "SCHEMA_VERSION",
    "SIGNATURE_FILE",
    "Bundle",
    "bundle_dir_name",
    "sign_manifest",
    "write_bundle",
]

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.binpb"
SIGNATURE_FILE = "manifest.sig"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Bundle:
    """The three shipped byte strings of one export."""

    onnx: bytes
    manifest: bytes
    signature: bytes


def sign_manifest(
    manifest: export_pb2.ExportManifest, onnx_bytes: bytes, private_key: Ed25519PrivateKey
) -> Bundle:
    """Fill hash, size, key id and creation time, serialise once and sign those bytes.

    Args:
        manifest: metadata to sign; a copy is completed, the argument is not modified.
        onnx_bytes: the exact bytes of the ONNX file.
        private_key: the server's Ed25519 key.
    """
    full = export_pb2.ExportManifest()
    full.CopyFrom(manifest)
    full.schema_version = SCHEMA_VERSION
    full.onnx_sha256 = hashlib.sha256(onnx_bytes).hexdigest()
    full.onnx_size = len(onnx_bytes)
    full.key_id = signing.key_id(private_key.public_key())
    if not full.created_unix_ms:
        full.created_unix_ms = int(time.time() * 1000)
    data = full.SerializeToString(deterministic=True)
    return Bundle(onnx=onnx_bytes, manifest=data, signature=signing.sign(private_key, data))


def bundle_dir_name(manifest: export_pb2.ExportManifest) -> str:
    """``<model_name>-<variant>-v<model_version>``, the directory name of a bundle."""
    return f"{manifest.model_name}-{manifest.variant}-v{manifest.model_version}"


def write_bundle(bundle: Bundle, directory: Path) -> Path:
    """Write the three files into ``directory`` atomically (all or nothing).

    Raises:
        FileExistsError: ``directory`` already exists (exports are immutable).
    """
    directory = Path(directory)
    if directory.exists():
        raise FileExistsError(f"bundle directory already exists: {directory}")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=directory.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a hub may run as another user
    for name, data in (
        (MODEL_FILE, bundle.onnx),
        (MANIFEST_FILE, bundle.manifest),
        (SIGNATURE_FILE, bundle.signature),
    ):
        with open(tmp / name, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, directory)
    return directory
