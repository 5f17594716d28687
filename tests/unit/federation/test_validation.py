import json
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from free_common import signing
from free_common.submission import Submission, demo_private_key, sign_submission
from server.pool import ModelPool
from server.validation import (
    KeyRegistry,
    KeyRegistryError,
    Limits,
    NodeBinding,
    Rejected,
    Validator,
)

from .helpers import SECRET, make_submission, tiny_spec


def _registry(*owners: str) -> KeyRegistry:
    return KeyRegistry(owners={o: demo_private_key(SECRET, o).public_key() for o in owners})


@pytest.mark.parametrize("arch", ["conv4", "resnet10", "resnet18"])
def test_valid_submissions_pass(arch: str) -> None:
    sub = make_submission(spec=tiny_spec(arch))
    out = Validator(keys=_registry("owner-000")).validate(sub, node_id=5)
    assert out.spec.arch == arch
    assert out.digest == sub.digest().hex()
    assert out.signed_by == signing.key_id(demo_private_key(SECRET, "owner-000").public_key())


def test_a_registered_node_submits_only_for_its_own_owners() -> None:
    sub = make_submission("owner-001")
    other = demo_private_key(SECRET, "owner-002").public_key()
    keys = KeyRegistry(
        owners={"owner-001": demo_private_key(SECRET, "owner-001").public_key()}, nodes={7: other}
    )
    with pytest.raises(Rejected) as err:
        Validator(keys=keys).validate(sub, node_id=7)
    assert err.value.reason == "identity"
    Validator(keys=keys).validate(sub, node_id=8)


def _key(owner: str) -> Ed25519PrivateKey:
    return demo_private_key(SECRET, owner)


def test_owner_id_is_accepted_only_with_its_own_key() -> None:
    """Carol's node, with carol's key, claims to be alice: refused (it was pooled as alice's)."""
    alice, carol = _key("alice"), _key("carol")
    keys = KeyRegistry(
        owners={"alice": alice.public_key(), "carol": carol.public_key()},
        nodes={7: carol.public_key()},
    )
    validator = Validator(keys=keys)
    cases = {  # (claimed owner, signing key, node) -> reason, "" = accepted
        ("alice", carol, 7): "identity",
        ("alice", alice, 7): "identity",  # alice's key, but from carol's node
        ("carol", carol, 7): "",
        ("alice", alice, 8): "",  # an unregistered node, signed by the claimed owner
        ("alice", carol, 8): "signature",
        ("mallory", carol, 7): "unknown-key",
    }

    def verdict(owner: str, key: Ed25519PrivateKey, node: int) -> str:
        try:
            checked = validator.validate(make_submission(owner, key=key), node_id=node)
        except Rejected as err:
            return err.reason
        assert checked.owner_id == owner
        return ""

    assert {case: verdict(*case) for case in cases} == cases


def test_one_node_for_several_owners_only_by_explicit_configuration() -> None:
    shared = _key("lab")
    keys = KeyRegistry(
        owners={"alice": _key("alice").public_key()},
        nodes={7: NodeBinding(shared.public_key(), frozenset({"carol", "dave"}))},
    )
    validator = Validator(keys=keys)
    for owner in ("carol", "dave"):
        assert validator.validate(make_submission(owner, key=shared), node_id=7).owner_id == owner
    with pytest.raises(Rejected) as err:  # not listed for node 7
        validator.validate(make_submission("alice", key=_key("alice")), node_id=7)
    assert err.value.reason == "identity"
    with pytest.raises(Rejected) as err:  # carol's key is the node's: not usable elsewhere
        validator.validate(make_submission("carol", key=_key("carol")), node_id=9)
    assert err.value.reason == "signature"
    with pytest.raises(KeyRegistryError, match="two keys"):
        KeyRegistry(
            owners={"dave": _key("dave").public_key()},
            nodes={7: NodeBinding(shared.public_key(), frozenset({"dave"}))},
        )


def test_registry_file_with_node_owner_lists(tmp_path: Path) -> None:
    reg = KeyRegistry(
        owners={"a": _key("a").public_key()},
        nodes={
            3: NodeBinding(_key("lab").public_key(), frozenset({"b", "c"})),
            4: _key("a").public_key(),
        },
    )
    path = tmp_path / "keys.json"
    path.write_text(reg.to_json())
    loaded = KeyRegistry.from_file(path)
    assert loaded.nodes[3].owners == {"b", "c"} and loaded.nodes[4].owners == frozenset()
    assert loaded.node_may_submit_for(3, "b") and not loaded.node_may_submit_for(3, "a")
    assert loaded.node_may_submit_for(4, "a") and not loaded.node_may_submit_for(4, "b")
    lab = signing.public_raw(_key("lab").public_key()).hex()
    for bad in (
        {"nodes": {"3": {"owners": ["b"]}}},
        {"nodes": {"3": {"key": lab, "owners": "b"}}},
        {"nodes": {"3": {"key": lab, "owners": [""]}}},
        {"nodes": {"3": {"key": lab, "extra": 1}}},
        {"owners": {"b": signing.public_raw(_key("b").public_key()).hex()},
         "nodes": {"3": {"key": lab, "owners": ["b"]}}},
    ):  # fmt: skip
        path.write_text(json.dumps(bad))
        with pytest.raises(KeyRegistryError):
            KeyRegistry.from_file(path)


@pytest.mark.parametrize(("hidden", "reason"), [(np.nan, "non-finite"), (3e38, "magnitude")])
def test_values_under_a_mask_are_checked(hidden: float, reason: str) -> None:
    """A MaskedArray's checks skip masked entries; its raw data is what would be stored."""
    sub = make_submission()
    name = next(k for k, v in sub.tensors.items() if v.dtype.kind == "f")
    data = sub.tensors[name].copy()
    data.reshape(-1)[0] = hidden
    mask = np.zeros(data.shape, bool)
    mask.reshape(-1)[0] = True
    tensors = {**sub.tensors, name: np.ma.MaskedArray(data, mask=mask)}
    assert np.isfinite(tensors[name]).all()  # what the checks used to see
    signed = Submission(sub.card, tensors, sign_submission(_key("owner-000"), sub.card, tensors))
    with pytest.raises(Rejected) as err:
        Validator(keys=_registry("owner-000")).validate(signed, node_id=1)
    assert err.value.reason == reason


def test_what_is_stored_is_exactly_what_was_checked(tmp_path: Path) -> None:
    """Subclasses, odd layouts and later changes by the caller never reach the pool."""
    sub = make_submission()
    names = sorted(sub.tensors)
    tensors = dict(sub.tensors)
    tensors[names[0]] = np.ma.MaskedArray(sub.tensors[names[0]].copy(), mask=False)
    tensors[names[1]] = np.asfortranarray(sub.tensors[names[1]])
    if sub.tensors[names[2]].ndim:
        tensors[names[2]] = np.repeat(sub.tensors[names[2]], 2)[::2]  # strided view
    signed = Submission(sub.card, tensors, sign_submission(_key("owner-000"), sub.card, tensors))
    checked = Validator(keys=_registry("owner-000")).validate(signed, node_id=1)
    assert checked.digest == sub.digest().hex()
    for name, array in checked.submission.tensors.items():
        assert type(array) is np.ndarray and array.flags.c_contiguous and array.flags.owndata
        assert np.array_equal(array, sub.tensors[name])
    tensors[names[0]].data.reshape(-1)[0] = np.nan  # the caller changes its array afterwards
    with ModelPool(tmp_path) as pool:
        stored = pool.load_tensors(pool.add(checked, node_id=1, round_num=1))
    assert all(np.array_equal(stored[k], sub.tensors[k]) for k in names)


def test_unsigned_and_unknown_owner() -> None:
    v = Validator(keys=_registry("owner-000"))
    with pytest.raises(Rejected) as err:
        v.validate(make_submission(signed=False), node_id=1)
    assert err.value.reason == "unsigned"
    with pytest.raises(Rejected) as err:
        v.validate(make_submission("owner-999"), node_id=1)
    assert err.value.reason == "unknown-key"


def test_without_registry_signatures_are_not_required() -> None:
    Validator().validate(make_submission(signed=False), node_id=1)


def test_duplicate_is_rejected() -> None:
    sub = make_submission()
    v = Validator(seen=lambda d: d == sub.digest().hex())
    with pytest.raises(Rejected) as err:
        v.validate(sub, node_id=1)
    assert err.value.reason == "duplicate"


def test_size_limit() -> None:
    with pytest.raises(Rejected) as err:
        Validator(Limits(max_model_bytes=1000)).validate(make_submission(), node_id=1)
    assert err.value.reason == "size"


def test_registry_file_roundtrip(tmp_path: Path) -> None:
    reg = KeyRegistry(
        owners={o: demo_private_key(SECRET, o).public_key() for o in ("a", "b")},
        nodes={3: demo_private_key(SECRET, "c").public_key()},
    )
    path = tmp_path / "keys.json"
    path.write_text(reg.to_json())
    loaded = KeyRegistry.from_file(path)
    assert set(loaded.owners) == {"a", "b"} and set(loaded.nodes) == {3}
    path.write_text(json.dumps({"owners": {"a": "zz"}}))
    with pytest.raises(KeyRegistryError):
        KeyRegistry.from_file(path)
    path.write_text(json.dumps({"people": {}}))
    with pytest.raises(KeyRegistryError):
        KeyRegistry.from_file(path)
    with pytest.raises(KeyRegistryError):
        KeyRegistry.from_file(tmp_path / "missing.json")


def test_malformed_container_types() -> None:
    sub = make_submission()
    with pytest.raises(Rejected):
        Validator().validate(Submission("card", sub.tensors), node_id=1)  # type: ignore[arg-type]
