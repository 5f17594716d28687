"""A barrage of malformed and hostile submissions against validation + pool.

Every case goes through the server's real path (``process_round`` -> ``Validator`` ->
``ModelPool``) in one pool that already holds accepted models. Each must be rejected with a
recorded reason, nothing may raise out of the round, and no accepted model may be lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from free_common.card import encode_card
from free_common.proto.v1 import model_card_pb2 as pb
from free_common.submission import Submission, demo_private_key, sign_submission
from server.pool import ModelPool
from server.round import Reply, process_round
from server.validation import KeyRegistry, Limits, Validator

from .helpers import SECRET, make_submission, tiny_spec

OWNER = "owner-000"
KEY = demo_private_key(SECRET, OWNER)
BASE = make_submission(OWNER, seed=100)
NAMES = sorted(BASE.tensors)
FLOATS = [n for n in NAMES if BASE.tensors[n].dtype.kind == "f"]
VARS = [n for n in NAMES if n.endswith("running_var")]

Case = tuple[str, set[str], Callable[[], Submission | str]]


def _card() -> pb.ModelCard:
    card = pb.ModelCard()
    card.ParseFromString(BASE.card)
    return card


def forge(
    tensors: dict[str, np.ndarray] | None = None,
    card: pb.ModelCard | bytes | None = None,
    *,
    sign: bool = True,
) -> Submission:
    """A submission with the given parts, correctly signed by the owner unless ``sign=False``."""
    t = tensors if tensors is not None else {k: v.copy() for k, v in BASE.tensors.items()}
    c = card if isinstance(card, bytes) else encode_card(card) if card is not None else BASE.card
    sig = sign_submission(KEY, c, t) if sign else b""
    return Submission(c, t, sig)


def _with(name: str, value: np.ndarray) -> dict[str, np.ndarray]:
    t = {k: v.copy() for k, v in BASE.tensors.items()}
    t[name] = value
    return t


def _card_with(mutate: Callable[[pb.ModelCard], None]) -> pb.ModelCard:
    card = _card()
    mutate(card)
    return card


def cases() -> Iterator[Case]:
    """(label, acceptable reasons, factory) for every hostile submission."""
    layout = {"shape", "dtype", "tensor-names"}
    for n in NAMES:
        a = BASE.tensors[n]
        yield f"truncated:{n}", layout, lambda a=a, n=n: forge(_with(n, a.reshape(-1)[:-1]))
        yield f"empty:{n}", layout, lambda a=a, n=n: forge(_with(n, a.reshape(-1)[:0]))
        yield f"extra-dim:{n}", layout, lambda a=a, n=n: forge(_with(n, a[None]))
        other = np.int32 if a.dtype.kind == "f" else np.float32
        yield f"dtype:{n}", {"dtype"}, lambda a=a, n=n, o=other: forge(_with(n, a.astype(o)))
        yield (
            f"missing:{n}",
            {"tensor-names"},
            lambda n=n: forge({k: v for k, v in BASE.tensors.items() if k != n}),
        )
    for n in FLOATS:
        a = BASE.tensors[n]
        for bad in (np.nan, np.inf, -np.inf):

            def nonfinite(a: np.ndarray = a, n: str = n, bad: float = bad) -> Submission:
                b = a.copy()
                b.reshape(-1)[0] = bad
                return forge(_with(n, b))

            yield f"nonfinite:{bad}:{n}", {"non-finite"}, nonfinite
        for hidden, reason in ((np.nan, "non-finite"), (3e38, "magnitude")):

            def masked(a: np.ndarray = a, n: str = n, hidden: float = hidden) -> Submission:
                b = a.copy()
                b.reshape(-1)[-1] = hidden
                mask = np.zeros(b.shape, bool)
                mask.reshape(-1)[-1] = True
                return forge(_with(n, np.ma.MaskedArray(b, mask=mask)))

            yield f"masked:{hidden:g}:{n}", {reason}, masked
        yield f"f64:{n}", {"dtype"}, lambda a=a, n=n: forge(_with(n, a.astype(np.float64)))
        yield f"big-endian:{n}", {"dtype"}, lambda a=a, n=n: forge(_with(n, a.astype(">f4")))
        yield f"huge:{n}", {"magnitude"}, lambda a=a, n=n: forge(_with(n, a * 0 + 1e9))
    for n in VARS:
        a = BASE.tensors[n]
        yield f"neg-var:{n}", {"batchnorm"}, lambda a=a, n=n: forge(_with(n, a * 0 - 1))
        yield (
            f"huge-var:{n}",
            {"batchnorm", "magnitude"},
            lambda a=a, n=n: forge(_with(n, a * 0 + 1e7)),
        )
    extra = {k: v.copy() for k, v in BASE.tensors.items()}
    extra["backdoor.weight"] = np.zeros(3, np.float32)
    yield "extra-tensor", {"tensor-names"}, lambda: forge(extra)
    many = {f"t{i}": np.zeros(1, np.float32) for i in range(2000)}
    yield "too-many-tensors", {"size"}, lambda: forge(many)
    big = {k: v.copy() for k, v in BASE.tensors.items()}
    big["pad"] = np.zeros(20_000_000, np.float32)
    yield "oversized", {"size"}, lambda: forge(big)
    yield (
        "list-not-array",
        {"malformed"},
        lambda: Submission(
            BASE.card,
            {**BASE.tensors, NAMES[0]: [1, 2]},
            BASE.signature,  # type: ignore[dict-item]
        ),
    )
    yield (
        "object-dtype",
        {"dtype", "malformed", "invalid"},
        lambda: forge(
            _with(
                NAMES[0],
                np.array([object()] * BASE.tensors[NAMES[0]].size).reshape(
                    BASE.tensors[NAMES[0]].shape
                ),
            ),
            sign=False,
        ),
    )
    yield "card-not-bytes", {"malformed"}, lambda: Submission("x", BASE.tensors)  # type: ignore[arg-type]
    yield "sig-not-bytes", {"malformed"}, lambda: Submission(BASE.card, BASE.tensors, "s")  # type: ignore[arg-type]
    yield "unpack-error", {"malformed"}, lambda: "cannot unpack reply: truncated Array bytes"

    # --- architecture and spec values (card re-signed so only the content is wrong)
    for arch in ("vgg16", "", "conv4 ", "RESNET18", "resnet34", "x" * 300):
        yield (
            f"arch:{arch[:10]}",
            {"architecture", "card"},
            lambda arch=arch: forge(
                card=_card_with(lambda c: setattr(c.architecture, "arch", arch))
            ),
        )
    spec_fields = [
        ("architecture", "width", [-1, 0, 513, 2**40, -(2**62)]),
        ("architecture", "num_classes", [-5, 0, 1, 1001, 2**50]),
        ("input", "channels", [-3, 0, 5, 2**31]),
        ("input", "image_size", [-32, 0, 7, 225, 2**33]),
    ]
    for group, name, values in spec_fields:
        for value in values:

            def bad_spec(group: str = group, name: str = name, value: int = value) -> Submission:
                return forge(card=_card_with(lambda c: setattr(getattr(c, group), name, value)))

            yield f"spec:{name}={value}", {"card", "architecture"}, bad_spec
    for vals in ([float("nan")], [float("inf")], [0.1, 0.2], []):
        yield (
            f"mean:{vals}",
            {"card"},
            lambda vals=vals: forge(
                card=_card_with(lambda c: (c.input.ClearField("mean"), c.input.mean.extend(vals)))
            ),
        )
    for vals in ([0.0], [-1.0], [float("nan")]):
        yield (
            f"std:{vals}",
            {"card"},
            lambda vals=vals: forge(
                card=_card_with(lambda c: (c.input.ClearField("std"), c.input.std.extend(vals)))
            ),
        )
    # --- card contradicts the weights
    for arch in ("resnet10", "resnet18"):
        yield (
            f"card-says-{arch}",
            {"tensor-names", "shape"},
            lambda arch=arch: forge(
                card=_card_with(lambda c: setattr(c.architecture, "arch", arch))
            ),
        )
    for name, value in (("width", 8), ("num_classes", 6), ("num_classes", 2)):
        yield (
            f"card-{name}-{value}",
            {"shape"},
            lambda name=name, value=value: forge(
                card=_card_with(lambda c: setattr(c.architecture, name, value))
            ),
        )
    yield (
        "card-image-size",
        {"shape", "card-mismatch"},
        lambda: forge(card=_card_with(lambda c: setattr(c.input, "image_size", 32))),
    )
    yield (
        "card-channels",
        {"shape", "card"},
        lambda: forge(
            card=_card_with(
                lambda c: (
                    setattr(c.input, "channels", 3),
                    c.input.mean.extend([0.5, 0.5]),
                    c.input.std.extend([0.5, 0.5]),
                )
            )
        ),
    )
    for delta in (-1, 1, 10**6):
        yield (
            f"card-params{delta:+d}",
            {"card-mismatch", "card"},
            lambda d=delta: forge(
                card=_card_with(lambda c: setattr(c, "num_parameters", c.num_parameters + d))
            ),
        )
        yield (
            f"card-tensors{delta:+d}",
            {"card-mismatch", "card"},
            lambda d=delta: forge(
                card=_card_with(lambda c: setattr(c, "num_tensors", c.num_tensors + d))
            ),
        )
    for label_case, names, kind in (
        ("too-few", ["a", "b"], pb.LABEL_KIND_SHARED_NAME),
        ("dupes", ["a", "a", "b", "c", "d"], pb.LABEL_KIND_SHARED_NAME),
        ("empty", ["", "b", "c", "d", "e"], pb.LABEL_KIND_SALTED_HASH),
        ("long", ["x" * 300, "b", "c", "d", "e"], pb.LABEL_KIND_SHARED_NAME),
        ("private-with-names", ["a", "b", "c", "d", "e"], pb.LABEL_KIND_PRIVATE),
        ("unknown-kind", [], 42),
    ):

        def bad_labels(names: list[str] = names, kind: int = kind) -> Submission:
            def mut(c: pb.ModelCard) -> None:
                c.label_names.extend(names)
                c.label_kind = kind  # type: ignore[assignment]

            return forge(card=_card_with(mut))

        yield f"labels:{label_case}", {"card"}, bad_labels
    for field, value in (
        ("holdout_accuracy", float("nan")),
        ("holdout_accuracy", 1.5),
        ("train_accuracy", -0.1),
        ("num_train_examples", -1),
        ("best_epoch", 10**12),
    ):
        yield (
            f"metric:{field}={value}",
            {"card"},
            lambda f=field, v=value: forge(card=_card_with(lambda c: setattr(c.metrics, f, v))),
        )
    for version in (0, 2, 2**31):
        yield (
            f"schema:{version}",
            {"card"},
            lambda v=version: forge(card=_card_with(lambda c: setattr(c, "schema_version", v))),
        )
    yield (
        "owner-id-huge",
        {"card"},
        lambda: forge(card=_card_with(lambda c: setattr(c, "owner_id", "o" * 1000))),
    )
    # --- garbage card bytes
    rng = np.random.default_rng(0)
    for i in range(12):
        junk = rng.integers(0, 256, size=int(rng.integers(0, 400)), dtype=np.uint8).tobytes()
        yield f"garbage-card-{i}", {"card"}, lambda junk=junk: forge(card=junk)
    yield "card-truncated", {"card"}, lambda: forge(card=BASE.card[: len(BASE.card) // 2])
    yield "card-oversized", {"card"}, lambda: forge(card=b"\x00" * 100_000)
    # --- signatures
    yield "unsigned", {"unsigned"}, lambda: forge(sign=False)
    yield (
        "sig-truncated",
        {"signature"},
        lambda: Submission(BASE.card, BASE.tensors, BASE.signature[:40]),
    )
    yield (
        "sig-long",
        {"signature"},
        lambda: Submission(BASE.card, BASE.tensors, BASE.signature + b"x"),
    )
    for bit in range(0, 512, 37):

        def flipped(bit: int = bit) -> Submission:
            sig = bytearray(BASE.signature)
            sig[bit // 8] ^= 1 << (bit % 8)
            return Submission(BASE.card, BASE.tensors, bytes(sig))

        yield f"sig-bitflip-{bit}", {"signature"}, flipped
    other = demo_private_key(SECRET, "owner-001")
    yield (
        "signed-by-other-owner",
        {"signature"},
        lambda: Submission(
            BASE.card, BASE.tensors, sign_submission(other, BASE.card, BASE.tensors)
        ),
    )
    yield (
        "claims-unknown-owner",
        {"unknown-key"},
        lambda: forge(card=_card_with(lambda c: setattr(c, "owner_id", "mallory"))),
    )
    yield (
        "wrong-key-id",
        {"signature"},
        lambda: forge(card=_card_with(lambda c: setattr(c, "key_id", "0" * 16))),
    )
    for n in FLOATS[:8]:

        def tampered(n: str = n) -> Submission:
            t = {k: v.copy() for k, v in BASE.tensors.items()}
            t[n].reshape(-1)[0] += 0.5
            return Submission(BASE.card, t, BASE.signature)

        yield f"tampered-after-signing:{n}", {"signature"}, tampered
    # --- replay of accepted models
    for i in range(3):
        yield f"replay-{i}", {"duplicate"}, lambda i=i: GOOD[i]


GOOD = [
    make_submission(OWNER, seed=s, spec=tiny_spec(a))
    for s, a in enumerate(["conv4", "resnet10", "resnet18"])
]
CASES = list(cases())


def _registry() -> KeyRegistry:
    return KeyRegistry(
        owners={o: demo_private_key(SECRET, o).public_key() for o in ("owner-000", "owner-001")}
    )


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[ModelPool]:
    with ModelPool(tmp_path / "pool") as p:
        yield p


def _as_reply(i: int, item: Submission | str) -> Reply:
    if isinstance(item, str):
        return Reply(f"m{i}", unpack_error=item)
    return Reply(f"m{i}", submission=item)


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 200
    assert len({label for label, _, _ in CASES}) == len(CASES)


def test_barrage_is_rejected_and_pool_survives(pool: ModelPool) -> None:
    validator = Validator(Limits(max_model_bytes=16 * 1024 * 1024), _registry(), pool.has_digest)
    first = process_round(
        1,
        {f"g{i}": 100 + i for i in range(3)},
        [Reply(f"g{i}", submission=s) for i, s in enumerate(GOOD)],
        validator=validator,
        pool=pool,
    )
    assert len(first.accepted) == 3
    accepted_ids = pool.ids()

    sent = {f"m{i}": 1000 + i for i in range(len(CASES))}
    replies = [_as_reply(i, factory()) for i, (_, _, factory) in enumerate(CASES)]
    outcome = process_round(2, sent, replies, validator=validator, pool=pool)

    assert outcome.accepted == {}
    wrong = {
        label: outcome.rejected.get(1000 + i)
        for i, (label, expected, _) in enumerate(CASES)
        if outcome.rejected.get(1000 + i) not in expected
    }
    assert wrong == {}, f"rejected for an unexpected reason: {wrong}"
    records = [r for r in pool.rejections() if r.round == 2]
    assert len(records) == len(CASES)
    assert all(r.reason and r.detail for r in records)
    assert pool.ids() == accepted_ids
    for tid in accepted_ids:
        assert pool.load(tid).model is not None
    # a good model still gets in after the barrage
    late = make_submission(OWNER, seed=7)
    assert validator.validate(late, node_id=5).digest not in accepted_ids


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(junk=st.binary(max_size=600))
def test_random_card_bytes_never_pass(pool: ModelPool, junk: bytes) -> None:
    validator = Validator(keys=_registry(), seen=pool.has_digest)
    outcome = process_round(
        1, {"x": 1}, [Reply("x", submission=forge(card=junk))], validator=validator, pool=pool
    )
    assert outcome.rejected and not outcome.accepted


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.sampled_from(FLOATS),
    index=st.integers(min_value=0, max_value=10**6),
    value=st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -1e30]),
)
def test_random_value_corruption_is_rejected(
    pool: ModelPool, name: str, index: int, value: float
) -> None:
    t = {k: v.copy() for k, v in BASE.tensors.items()}
    flat = t[name].reshape(-1)
    flat[index % flat.size] = value
    validator = Validator(keys=_registry(), seen=pool.has_digest)
    outcome = process_round(
        1, {"x": 1}, [Reply("x", submission=forge(t))], validator=validator, pool=pool
    )
    assert outcome.rejected.get(1) in {"non-finite", "magnitude", "batchnorm"}
    assert len(pool) == 0
