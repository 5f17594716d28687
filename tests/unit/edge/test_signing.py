import base64
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from client.edge.verify import VerificationError, load_public_key_file
from free_common import signing


def test_sign_and_verify_round_trip() -> None:
    # Prepare
    private_pem, public_raw = signing.generate_keypair()
    key = signing.load_private_key(private_pem)
    # Execute
    sig = signing.sign(key, b"payload")
    # Assert
    assert len(public_raw) == 32 and len(sig) == 64
    signing.verify(signing.load_public_key(public_raw), sig, b"payload")


def test_public_key_loads_from_pem_and_raw_with_same_id() -> None:
    private_pem, public_raw = signing.generate_keypair()
    pem = (
        signing.load_private_key(private_pem)
        .public_key()
        .public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    )
    assert signing.key_id(signing.load_public_key(pem)) == signing.key_id(public_raw)
    assert len(signing.key_id(public_raw)) == 16


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda sig, data: (sig, data + b"!"), "does not verify"),
        (lambda sig, data: (sig[:-1], data), "truncated"),
        (lambda sig, data: (bytes([sig[0] ^ 1]) + sig[1:], data), "does not verify"),
    ],
)
def test_verify_rejects_tampering(
    mutate: Callable[[bytes, bytes], tuple[bytes, bytes]], message: str
) -> None:
    private_pem, public_raw = signing.generate_keypair()
    sig = signing.sign(signing.load_private_key(private_pem), b"data")
    bad_sig, bad_data = mutate(sig, b"data")
    with pytest.raises(signing.SignatureError, match=message):
        signing.verify(signing.load_public_key(public_raw), bad_sig, bad_data)


def test_verify_rejects_other_key() -> None:
    private_pem, _ = signing.generate_keypair()
    _, other_raw = signing.generate_keypair()
    sig = signing.sign(signing.load_private_key(private_pem), b"data")
    with pytest.raises(signing.SignatureError):
        signing.verify(signing.load_public_key(other_raw), sig, b"data")


@pytest.mark.parametrize("blob", [b"", b"x" * 31, b"not a pem at all" * 4])
def test_bad_public_key_bytes_raise_signature_error(blob: bytes) -> None:
    with pytest.raises(signing.SignatureError):
        signing.load_public_key(blob)


def test_bad_private_key_raises_signature_error() -> None:
    with pytest.raises(signing.SignatureError):
        signing.load_private_key(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


# The eight points of order dividing 8 in their canonical encodings (the 8-torsion subgroup
# as listed by curve25519-dalek's EIGHT_TORSION): identity, order 8, 4, 8, 2, 8, 4, 8.
TORSION = [
    "0100000000000000000000000000000000000000000000000000000000000000",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
]
# The six other encodings of the same points: x = 0 with the sign bit set (y = 1, y = -1),
# and y = p or p + 1 (0 and 1 written without reduction), each with either sign bit.
NON_CANONICAL = [
    "0100000000000000000000000000000000000000000000000000000000000080",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
]
_SPKI_ED25519_PREFIX = bytes.fromhex("302a300506032b6570032100")


def _as_pem(raw: bytes) -> bytes:
    body = base64.b64encode(_SPKI_ED25519_PREFIX + raw)
    return b"-----BEGIN PUBLIC KEY-----\n" + body + b"\n-----END PUBLIC KEY-----\n"


@pytest.mark.parametrize("encoding", ["raw", "hex", "pem"])
@pytest.mark.parametrize("point", TORSION + NON_CANONICAL)
def test_small_order_public_key_is_refused(point: str, encoding: str) -> None:
    raw = bytes.fromhex(point)
    data = {"raw": raw, "hex": point.encode() + b"\n", "pem": _as_pem(raw)}[encoding]
    with pytest.raises(signing.SignatureError, match="small-order|canonical"):
        signing.load_public_key(data)


@pytest.mark.parametrize("point", [TORSION[0], TORSION[6]])  # the identity, all zeros
def test_pinned_small_order_key_file_is_refused(point: str, tmp_path: Path) -> None:
    (tmp_path / "server.pub").write_bytes(bytes.fromhex(point))
    with pytest.raises(VerificationError, match="small-order"):
        load_public_key_file(tmp_path / "server.pub")


def test_pem_encoding_of_a_genuine_key_loads() -> None:
    _, raw = signing.generate_keypair()
    assert signing.public_raw(signing.load_public_key(_as_pem(raw))) == raw


def test_point_off_the_curve_is_refused() -> None:
    with pytest.raises(signing.SignatureError, match="not a point"):
        signing.load_public_key(bytes.fromhex("02" + "00" * 31))
