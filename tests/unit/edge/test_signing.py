from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization

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
