import json
from pathlib import Path

import pytest

from free_common import signing
from free_common.submission import Submission, demo_private_key
from server.validation import KeyRegistry, KeyRegistryError, Limits, Rejected, Validator

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


def test_node_binding_wins_over_owner_id() -> None:
    sub = make_submission("owner-001")
    other = demo_private_key(SECRET, "owner-002").public_key()
    keys = KeyRegistry(
        owners={"owner-001": demo_private_key(SECRET, "owner-001").public_key()}, nodes={7: other}
    )
    with pytest.raises(Rejected) as err:
        Validator(keys=keys).validate(sub, node_id=7)
    assert err.value.reason == "signature"
    Validator(keys=keys).validate(sub, node_id=8)


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
    reg = _registry("a", "b")
    reg.nodes[3] = demo_private_key(SECRET, "c").public_key()
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
