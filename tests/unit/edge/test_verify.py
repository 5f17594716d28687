"""Verification of signed bundles: every mutation of model, manifest or signature is refused."""

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.edge.verify import RollbackError, VerificationError, verify_bundle
from free_common import signing
from free_common.export.manifest import sign_manifest
from free_common.proto.v1 import export_pb2

KEY_PEM, PUBLIC_RAW = signing.generate_keypair()
PRIVATE = signing.load_private_key(KEY_PEM)
PUBLIC = signing.load_public_key(PUBLIC_RAW)
MODEL = hashlib.sha512(b"stand-in model").digest() * 8  # 512 bytes, verify never parses it


def _manifest(version: int = 3) -> export_pb2.ExportManifest:
    m = export_pb2.ExportManifest(model_name="free-conv4", variant="proto", model_version=version)
    m.input.layout, m.input.channels, m.input.image_size = "NCHW", 1, 32
    return m


BUNDLE = sign_manifest(_manifest(), MODEL, PRIVATE)


def _flip(data: bytes, position: int, bit: int) -> bytes:
    out = bytearray(data)
    out[position] ^= 1 << bit
    return bytes(out)


def test_genuine_bundle_verifies() -> None:
    verified = verify_bundle(BUNDLE.onnx, BUNDLE.manifest, BUNDLE.signature, PUBLIC)
    assert verified.manifest.onnx_sha256 == hashlib.sha256(MODEL).hexdigest()
    assert verified.manifest.key_id == signing.key_id(PUBLIC)
    assert verified.onnx_bytes == MODEL


def _mutations() -> list[tuple[str, int, int]]:
    """>= 100 distinct (part, byte position, bit) spread across the three shipped parts."""
    out = []
    for part, size, count in (
        ("onnx", len(BUNDLE.onnx), 40),
        ("manifest", len(BUNDLE.manifest), 40),
        ("signature", len(BUNDLE.signature), 40),
    ):
        for i in range(count):
            out.append((part, (i * 7919) % size, i % 8))
    return sorted(set(out))


MUTATIONS = _mutations()


def test_at_least_100_distinct_mutations() -> None:
    assert len(MUTATIONS) >= 100


@pytest.mark.parametrize(("part", "position", "bit"), MUTATIONS)
def test_single_bit_flip_is_refused(part: str, position: int, bit: int) -> None:
    # Prepare
    parts = {"onnx": BUNDLE.onnx, "manifest": BUNDLE.manifest, "signature": BUNDLE.signature}
    parts[part] = _flip(parts[part], position, bit)
    # Execute / Assert
    with pytest.raises(VerificationError):
        verify_bundle(parts["onnx"], parts["manifest"], parts["signature"], PUBLIC)


@settings(max_examples=200, deadline=None)
@given(
    part=st.sampled_from(["onnx", "manifest", "signature"]),
    data=st.data(),
)
def test_random_edits_are_refused(part: str, data: st.DataObject) -> None:
    parts = {"onnx": BUNDLE.onnx, "manifest": BUNDLE.manifest, "signature": BUNDLE.signature}
    original = parts[part]
    edited = data.draw(
        st.one_of(
            st.binary(max_size=80),  # replaced wholesale
            st.integers(0, len(original) - 1).map(lambda n: original[:n]),  # truncated
            st.binary(min_size=1, max_size=8).map(lambda b: original + b),  # appended
        )
    )
    if edited == original:
        return
    parts[part] = edited
    with pytest.raises(VerificationError):
        verify_bundle(parts["onnx"], parts["manifest"], parts["signature"], PUBLIC)


def test_wrong_key_is_refused() -> None:
    _, other = signing.generate_keypair()
    with pytest.raises(VerificationError, match="signature rejected"):
        verify_bundle(
            BUNDLE.onnx, BUNDLE.manifest, BUNDLE.signature, signing.load_public_key(other)
        )


def test_truncated_signature_is_refused() -> None:
    with pytest.raises(VerificationError, match="truncated"):
        verify_bundle(BUNDLE.onnx, BUNDLE.manifest, BUNDLE.signature[:63], PUBLIC)


def test_rollback_is_refused() -> None:
    old = sign_manifest(_manifest(version=2), MODEL, PRIVATE)
    with pytest.raises(RollbackError, match="rollback refused"):
        verify_bundle(old.onnx, old.manifest, old.signature, PUBLIC, min_version=3)


def test_model_swapped_for_another_signed_model_is_refused() -> None:
    other = sign_manifest(_manifest(), MODEL[::-1], PRIVATE)
    with pytest.raises(VerificationError, match="SHA-256"):
        verify_bundle(other.onnx, BUNDLE.manifest, BUNDLE.signature, PUBLIC)


def test_manifest_signed_by_other_key_claiming_our_key_id_is_refused() -> None:
    other_pem, _ = signing.generate_keypair()
    forged = sign_manifest(_manifest(), MODEL, signing.load_private_key(other_pem))
    with pytest.raises(VerificationError):
        verify_bundle(forged.onnx, forged.manifest, forged.signature, PUBLIC)
