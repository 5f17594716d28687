"""Model cards: the description a data owner ships with its weights (proto <-> ModelSpec).

A card is serialised once by the owner; those exact bytes are signed and shipped. The server
parses them with :func:`decode_card` (bounded size, strict checks) and rebuilds the
:class:`~free_common.models.spec.ModelSpec` with :func:`spec_from_card`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from free_common.models.spec import ModelSpec, SpecError
from free_common.proto.v1 import model_card_pb2 as pb

__all__ = [
    "CARD_SCHEMA_VERSION",
    "MAX_CARD_BYTES",
    "MAX_LABEL_CHARS",
    "CardError",
    "OwnerMetrics",
    "class_keys",
    "decode_card",
    "encode_card",
    "make_card",
    "spec_from_card",
]

CARD_SCHEMA_VERSION = 1
MAX_CARD_BYTES = 64 * 1024
MAX_LABEL_CHARS = 256
_LABEL_KINDS = {
    "private": pb.LABEL_KIND_PRIVATE,
    "shared": pb.LABEL_KIND_SHARED_NAME,
    "salted-hash": pb.LABEL_KIND_SALTED_HASH,
}


class CardError(ValueError):
    """A model card cannot be parsed or contradicts itself."""


@dataclass(frozen=True)
class OwnerMetrics:
    """What the owner measured locally and reports in the card."""

    holdout_accuracy: float
    train_accuracy: float
    num_train_examples: int
    num_holdout_examples: int
    best_epoch: int


def make_card(
    spec: ModelSpec,
    metrics: OwnerMetrics,
    *,
    owner_id: str,
    key_id: str,
    num_parameters: int,
    num_tensors: int,
    software_version: str,
    label_names: tuple[str, ...] = (),
    label_kind: str = "private",
) -> pb.ModelCard:
    """Build the card of one trained classifier.

    Args:
        spec: the classifier's spec.
        metrics: hold-out and training metrics.
        owner_id: stable owner name (the server looks its key up by it).
        key_id: :func:`free_common.signing.key_id` of the owner's signing key ("" if unsigned).
        num_parameters: scalars over every tensor of the state dict.
        num_tensors: entries of the state dict.
        software_version: the project version that trained it.
        label_names: empty, or one shared name (or salted hash) per output, in output order.
        label_kind: "private", "shared" or "salted-hash".
    """
    if label_kind not in _LABEL_KINDS:
        raise CardError(f"unknown label kind {label_kind!r}: known {', '.join(_LABEL_KINDS)}")
    card = pb.ModelCard(
        schema_version=CARD_SCHEMA_VERSION,
        architecture=pb.ArchitectureSpec(
            arch=spec.arch, width=spec.width, num_classes=spec.num_classes
        ),
        input=pb.CardInput(
            channels=spec.in_channels,
            image_size=spec.image_size,
            mean=list(spec.mean),
            std=list(spec.std),
        ),
        label_kind=_LABEL_KINDS[label_kind],
        label_names=list(label_names),
        metrics=pb.HoldoutMetrics(
            holdout_accuracy=metrics.holdout_accuracy,
            train_accuracy=metrics.train_accuracy,
            num_train_examples=metrics.num_train_examples,
            num_holdout_examples=metrics.num_holdout_examples,
            best_epoch=metrics.best_epoch,
        ),
        software_version=software_version,
        owner_id=owner_id,
        key_id=key_id,
        num_parameters=num_parameters,
        num_tensors=num_tensors,
        created_unix_ms=int(time.time() * 1000),
    )
    check_card(card)
    return card


def encode_card(card: pb.ModelCard) -> bytes:
    """Deterministic serialisation of ``card`` (the bytes that get signed)."""
    return card.SerializeToString(deterministic=True)


def decode_card(data: bytes, *, max_bytes: int = MAX_CARD_BYTES) -> pb.ModelCard:
    """Parse and check card bytes received from an untrusted owner.

    Raises:
        CardError: too large, not a ModelCard, or inconsistent fields.
    """
    if not isinstance(data, bytes):
        raise CardError(f"card must be bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise CardError(f"card is {len(data)} bytes, limit {max_bytes}")
    card = pb.ModelCard()
    try:
        card.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as err:
        raise CardError(f"card bytes are not a ModelCard: {err}") from err
    check_card(card)
    return card


def check_card(card: pb.ModelCard) -> None:
    """Check the fields that do not depend on the weights.

    Raises:
        CardError: wrong schema version, invalid spec, bad labels or metrics.
    """
    if card.schema_version != CARD_SCHEMA_VERSION:
        raise CardError(
            f"card schema version {card.schema_version}, expected {CARD_SCHEMA_VERSION}"
        )
    if not card.HasField("architecture") or not card.HasField("input"):
        raise CardError("card lacks its architecture or input section")
    spec = spec_from_card(card)
    if card.label_kind not in _LABEL_KINDS.values():
        raise CardError(f"card has unknown label kind {card.label_kind}")
    names = list(card.label_names)
    if card.label_kind == pb.LABEL_KIND_PRIVATE and names:
        raise CardError("private labels must not carry label names")
    if card.label_kind != pb.LABEL_KIND_PRIVATE:
        if len(names) != spec.num_classes:
            raise CardError(f"card has {len(names)} label names for {spec.num_classes} classes")
        if any(not n or len(n) > MAX_LABEL_CHARS for n in names):
            raise CardError(f"label names must be 1..{MAX_LABEL_CHARS} characters")
        if len(set(names)) != len(names):
            raise CardError("label names must be distinct")
    m = card.metrics
    for name in ("holdout_accuracy", "train_accuracy"):
        value = getattr(m, name)
        if not 0.0 <= value <= 1.0:  # also false for NaN
            raise CardError(f"card metric {name} must be in [0, 1], got {value!r}")
    for name in ("num_train_examples", "num_holdout_examples", "best_epoch"):
        if not 0 <= getattr(m, name) <= 10**9:
            raise CardError(f"card metric {name} out of range: {getattr(m, name)}")
    if not 0 < card.num_parameters <= 10**9 or not 0 < card.num_tensors <= 10**5:
        raise CardError(
            f"card claims {card.num_parameters} parameters in {card.num_tensors} tensors"
        )
    if len(card.owner_id) > 128 or len(card.software_version) > 64 or len(card.key_id) > 64:
        raise CardError("card owner_id, key_id or software_version too long")


def spec_from_card(card: pb.ModelCard) -> ModelSpec:
    """The :class:`ModelSpec` a card describes.

    Raises:
        CardError: unknown architecture or out-of-range values (wraps :class:`SpecError`).
    """
    a, i = card.architecture, card.input
    try:
        return ModelSpec(
            arch=a.arch,
            in_channels=int(i.channels),
            image_size=int(i.image_size),
            num_classes=int(a.num_classes),
            width=int(a.width),
            mean=tuple(float(v) for v in i.mean),
            std=tuple(float(v) for v in i.std),
        )
    except SpecError as err:
        raise CardError(f"card spec invalid: {err}") from err


def class_keys(card: pb.ModelCard, teacher_id: str) -> tuple[str, ...]:
    """Memory-bank key of each output: the shared label if any, else ``teacher_id/i``."""
    n = int(card.architecture.num_classes)
    if card.label_kind == pb.LABEL_KIND_PRIVATE or not card.label_names:
        return tuple(f"{teacher_id}/{i}" for i in range(n))
    prefix = "label:" if card.label_kind == pb.LABEL_KIND_SHARED_NAME else "hash:"
    return tuple(prefix + name for name in card.label_names)
