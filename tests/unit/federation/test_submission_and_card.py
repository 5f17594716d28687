import numpy as np
import pytest

from free_common import signing
from free_common.card import CardError, class_keys, decode_card, encode_card, spec_from_card
from free_common.submission import (
    Submission,
    canonical_digest,
    demo_private_key,
    verify_submission,
)

from .helpers import SECRET, make_submission, tiny_spec


def test_digest_is_deterministic_and_order_independent() -> None:
    sub = make_submission()
    reordered = dict(reversed(list(sub.tensors.items())))
    assert canonical_digest(sub.card, sub.tensors) == canonical_digest(sub.card, reordered)
    assert len(sub.digest()) == 32


@pytest.mark.parametrize("change", ["value", "dtype", "shape", "name", "card"])
def test_digest_changes_with_any_part(change: str) -> None:
    sub = make_submission()
    tensors = {k: v.copy() for k, v in sub.tensors.items()}
    card = sub.card
    name = "head.weight" if "head.weight" in tensors else sorted(tensors)[0]
    if change == "value":
        tensors[name].flat[0] += 1e-3
    elif change == "dtype":
        tensors[name] = tensors[name].astype(np.float64)
    elif change == "shape":
        tensors[name] = tensors[name].reshape(-1)
    elif change == "name":
        tensors[name + "x"] = tensors.pop(name)
    else:
        card = card + b"\x00"
    assert canonical_digest(card, tensors) != sub.digest()


def test_big_endian_arrays_hash_like_little_endian() -> None:
    a = {"w": np.arange(6, dtype="<f4").reshape(2, 3)}
    b = {"w": a["w"].astype(">f4")}
    assert canonical_digest(b"c", a) == canonical_digest(b"c", b)


def test_signature_roundtrip_and_tamper() -> None:
    sub = make_submission("owner-003")
    key = demo_private_key(SECRET, "owner-003").public_key()
    verify_submission(key, sub)
    tampered = {k: v.copy() for k, v in sub.tensors.items()}
    next(iter(tampered.values())).flat[0] += 1
    with pytest.raises(signing.SignatureError):
        verify_submission(key, Submission(sub.card, tampered, sub.signature))
    with pytest.raises(signing.SignatureError):
        verify_submission(key, Submission(sub.card, sub.tensors, b""))


def test_demo_keys_are_per_owner_and_secret() -> None:
    a = signing.public_raw(demo_private_key("s", "owner-000").public_key())
    assert a == signing.public_raw(demo_private_key("s", "owner-000").public_key())
    assert a != signing.public_raw(demo_private_key("s", "owner-001").public_key())
    assert a != signing.public_raw(demo_private_key("t", "owner-000").public_key())


def test_card_roundtrip_gives_the_spec() -> None:
    sub = make_submission(label_names=tuple(f"c{i}" for i in range(5)))
    card = decode_card(sub.card)
    assert spec_from_card(card) == tiny_spec()
    assert encode_card(card) == sub.card
    assert class_keys(card, "t1") == tuple(f"label:c{i}" for i in range(5))
    private = decode_card(make_submission().card)
    assert class_keys(private, "t1") == tuple(f"t1/{i}" for i in range(5))


@pytest.mark.parametrize("data", [b"\xff" * 10, b"\x0a\x05abc", b"", b"x" * 70000])
def test_garbage_cards_are_refused(data: bytes) -> None:
    with pytest.raises(CardError):
        decode_card(data)
