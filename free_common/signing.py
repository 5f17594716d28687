"""Ed25519 signing shared by the server, the data owners and the edge runtime.

Keys travel as PEM (private, PKCS#8, unencrypted); a public key is read as its 32 raw bytes,
as those bytes in hex (the server's ``server-ed25519.pub.hex``) or as PEM. A public key that
is a small-order point, a non-canonical encoding or no curve point at all is refused: under
such a key (the identity point, for one) forged signatures verify. Signatures are detached:
64 bytes over the exact bytes that were shipped, never over a re-serialisation.
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
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")

# Edwards25519 (RFC 8032, section 5.1): -x^2 + y^2 = 1 + d x^2 y^2 over GF(p).
_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_MINUS_ONE = pow(2, (_P - 1) // 4, _P)
_COFACTOR_DOUBLINGS = 3  # the cofactor is 8


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
    """Parse a public key given as 32 raw bytes, 64 hex digits or a PEM SubjectPublicKeyInfo.

    Whitespace around hex digits or PEM (a trailing newline) is ignored.

    Raises:
        SignatureError: the bytes are none of these, the PEM key is not Ed25519, or the key
            is not a canonically encoded curve point of large order.
    """
    text = data.strip()
    if len(data) == PUBLIC_KEY_BYTES:
        raw = data
    elif len(text) == 2 * PUBLIC_KEY_BYTES and set(text) <= _HEX_DIGITS:
        raw = bytes.fromhex(text.decode("ascii"))
    elif text.startswith(b"-----BEGIN"):
        raw = public_raw(_load_pem_public_key(data))
    else:
        raise SignatureError(
            f"public key must be {PUBLIC_KEY_BYTES} raw bytes, {2 * PUBLIC_KEY_BYTES} hex "
            f"digits or PEM, got {len(data)} bytes"
        )
    _check_public_point(raw)
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as err:
        raise SignatureError(f"invalid raw Ed25519 public key: {err}") from err


def _load_pem_public_key(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as err:
        raise SignatureError(f"cannot parse public key PEM: {err}") from err
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"public key is {type(key).__name__}, expected Ed25519")
    return key


def _decode_point(raw: bytes) -> tuple[int, int]:
    """Affine (x, y) of an encoded point (RFC 8032, 5.1.3), refusing non-canonical encodings."""
    encoded = int.from_bytes(raw, "little")
    y, x_is_odd = encoded & ((1 << 255) - 1), encoded >> 255
    if y >= _P:
        raise SignatureError("public key is not canonically encoded (y >= p)")
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    if v * x * x % _P == (-u) % _P:
        x = x * _SQRT_MINUS_ONE % _P
    if v * x * x % _P != u:
        raise SignatureError("public key is not a point of the Ed25519 curve")
    if x == 0 and x_is_odd:
        raise SignatureError("public key is not canonically encoded (x = 0 with sign bit)")
    return (_P - x if x & 1 != x_is_odd else x), y


def _double(point: tuple[int, int]) -> tuple[int, int]:
    """2P with the complete twisted Edwards addition law (a = -1)."""
    x, y = point
    t = _D * x * x * y * y % _P
    x2 = 2 * x * y * pow(1 + t, _P - 2, _P) % _P
    y2 = (y * y + x * x) * pow(1 - t, _P - 2, _P) % _P
    return x2, y2


def _check_public_point(raw: bytes) -> None:
    """Refuse a key whose point has small order (8P is the identity (0, 1))."""
    point = _decode_point(raw)
    for _ in range(_COFACTOR_DOUBLINGS):
        point = _double(point)
    if point == (0, 1):
        raise SignatureError(
            "public key is a small-order point (e.g. all zeros or the identity): "
            "forged signatures would verify under it"
        )


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
