"""Ed25519 signing shared by the server, the data owners and the edge runtime.

Keys travel as PEM (private, PKCS#8, unencrypted) and as the 32 raw bytes of the public key
(what an app pins). Signatures are detached: 64 bytes over the exact bytes that were shipped,
never over a re-serialisation.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "PUBLIC_KEY_BYTES",
    "SIGNATURE_BYTES",
    "SignatureError",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "public_raw",
    "sign",
    "verify",
]

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
_KEY_ID_HEX_CHARS = 16


class SignatureError(ValueError):
    """A key cannot be parsed, or a signature does not verify."""


def generate_keypair() -> tuple[bytes, bytes]:
    """Make a fresh Ed25519 key pair.

    Returns:
        ``(private_pem, public_raw)``: the private key as unencrypted PKCS#8 PEM and the public
        key as its 32 raw bytes.
    """
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, public_raw(private.public_key())


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """Parse an unencrypted PEM private key; raise :class:`SignatureError` if it is not Ed25519."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as err:
        raise SignatureError(f"cannot parse private key PEM: {err}") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"private key is {type(key).__name__}, expected Ed25519")
    return key


def load_public_key(data: bytes) -> Ed25519PublicKey:
    """Parse a public key given as 32 raw bytes or as a PEM SubjectPublicKeyInfo.

    Raises:
        SignatureError: the bytes are neither, or the PEM key is not Ed25519.
    """
    if len(data) == PUBLIC_KEY_BYTES:
        try:
            return Ed25519PublicKey.from_public_bytes(data)
        except ValueError as err:
            raise SignatureError(f"invalid raw Ed25519 public key: {err}") from err
    if not data.lstrip().startswith(b"-----BEGIN"):
        raise SignatureError(
            f"public key must be {PUBLIC_KEY_BYTES} raw bytes or PEM, got {len(data)} bytes"
        )
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as err:
        raise SignatureError(f"cannot parse public key PEM: {err}") from err
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"public key is {type(key).__name__}, expected Ed25519")
    return key


def public_raw(public_key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of ``public_key``."""
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign(private_key: Ed25519PrivateKey, data: bytes) -> bytes:
    """Detached Ed25519 signature (64 bytes) over ``data``."""
    return private_key.sign(data)


def verify(public_key: Ed25519PublicKey, signature: bytes, data: bytes) -> None:
    """Check a detached signature over ``data``.

    Raises:
        SignatureError: wrong length or the signature does not match ``data`` under the key.
    """
    if len(signature) != SIGNATURE_BYTES:
        raise SignatureError(
            f"signature must be {SIGNATURE_BYTES} bytes, got {len(signature)} (truncated?)"
        )
    try:
        public_key.verify(signature, data)
    except InvalidSignature as err:
        raise SignatureError(
            f"signature does not verify under key {key_id(public_key)}: "
            "data tampered with or signed by another key"
        ) from err


def key_id(public_key: Ed25519PublicKey | bytes) -> str:
    """Short identifier of a public key: the first 16 hex digits of SHA-256 of its raw bytes."""
    raw = public_key if isinstance(public_key, bytes) else public_raw(public_key)
    if len(raw) != PUBLIC_KEY_BYTES:
        raise SignatureError(f"key_id needs {PUBLIC_KEY_BYTES} raw key bytes, got {len(raw)}")
    return hashlib.sha256(raw).hexdigest()[:_KEY_ID_HEX_CHARS]
