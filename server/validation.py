"""Validation of untrusted submissions before anything touches the pool or a model.

Every check raises :class:`Rejected` with a short machine-readable ``reason`` (recorded in
the pool) and a human message. Checks run cheapest first (types, counts and sizes before
anything is parsed, hashed or copied) and never build a model from the submitted tensors:
the expected layout comes from a model built on the ``meta`` device. Every tensor is then
copied to a plain C-contiguous ``numpy.ndarray`` and every later check, the digest and the
pool see that copy only, so what is stored is exactly what was checked (an
``numpy.ma.MaskedArray`` would otherwise hide NaN under its mask from the checks).
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from free_common import signing
from free_common.card import CardError, decode_card, spec_from_card
from free_common.models import ModelSpec, build_model
from free_common.proto.v1 import model_card_pb2 as pb
from free_common.submission import Submission, SubmissionError, verify_submission

__all__ = [
    "KeyRegistry",
    "KeyRegistryError",
    "Limits",
    "NodeBinding",
    "Rejected",
    "ValidatedSubmission",
    "Validator",
    "expected_layout",
]

logger = logging.getLogger(__name__)


class Rejected(ValueError):
    """A submission failed validation.

    Attributes:
        reason: short slug, e.g. ``"shape"``, ``"signature"``, ``"duplicate"``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class KeyRegistryError(ValueError):
    """The key registry file is missing or malformed."""


@dataclass(frozen=True)
class Limits:
    """Size and value bounds for one submission."""

    max_model_bytes: int = 64 * 1024 * 1024
    max_card_bytes: int = 64 * 1024
    max_tensors: int = 1024
    max_abs_weight: float = 1e4
    max_running_var: float = 1e6
    input_channels: tuple[int, ...] = (1, 3)
    min_input_side: int = 1
    max_input_side: int = 1 << 16

    def around_input(self, side: int, scale: float) -> Limits:
        """These limits, accepting a model's input side within ``scale`` times ``side`` either way.

        Args:
            side: the meta-learner's input side.
            scale: the largest accepted ratio between the two sides (>= 1).
        """
        low = max(1, math.ceil(side / scale - 1e-9))
        return replace(self, min_input_side=low, max_input_side=math.floor(side * scale + 1e-9))


@dataclass(frozen=True)
class ValidatedSubmission:
    """A submission that passed every check."""

    submission: Submission
    card: pb.ModelCard
    spec: ModelSpec
    digest: str
    owner_id: str
    signed_by: str


@dataclass(frozen=True)
class NodeBinding:
    """A registered node: its key and, when configured, the owner ids it may submit for.

    Attributes:
        key: the node's Ed25519 public key.
        owners: owner ids this node submits for, signed with ``key``; empty: the owners
            registered with the same key.
    """

    key: Ed25519PublicKey
    owners: frozenset[str] = frozenset()


class KeyRegistry:
    """Registered Ed25519 public keys of data owners, and optionally of nodes.

    An owner id in a card is accepted only signed with the key registered for that owner
    id. A registered node may submit only for the owners registered with its own key,
    unless its entry lists the owner ids it submits for (the only way to let one node speak
    for several owners with one key). An unregistered node may submit for any registered
    owner, signed with that owner's key.

    File format (JSON)::

        {"owners": {"<owner-id>": "<key>"},
         "nodes": {"<node-id>": "<key>" or {"key": "<key>", "owners": ["<owner-id>", ...]}}}

    where a key is 64 hex digits (the raw 32 bytes) or a PEM block. Owners listed by a node
    entry are registered with that node's key. ``owners`` and ``nodes`` are read-only views.

    Raises:
        KeyRegistryError: one owner id registered with two different keys.
    """

    def __init__(
        self,
        owners: Mapping[str, Ed25519PublicKey] | None = None,
        nodes: Mapping[int, Ed25519PublicKey | NodeBinding] | None = None,
    ) -> None:
        self.owners: Mapping[str, Ed25519PublicKey] = MappingProxyType(dict(owners or {}))
        self.nodes: Mapping[int, NodeBinding] = MappingProxyType(
            {
                n: b if isinstance(b, NodeBinding) else NodeBinding(b)
                for n, b in (nodes or {}).items()
            }
        )
        self._owner_keys = _owner_keys(self.owners, self.nodes)

    def __len__(self) -> int:
        return len(self.owners) + len(self.nodes)

    @classmethod
    def from_file(cls, path: Path) -> KeyRegistry:
        """Load a registry file (see the class docstring)."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise KeyRegistryError(f"cannot read key registry {path}: {err}") from err
        if not isinstance(data, dict) or set(data) - {"owners", "nodes"}:
            raise KeyRegistryError(f"{path}: expected an object with 'owners' and/or 'nodes'")
        try:
            owners = {str(k): _parse_key(v) for k, v in dict(data.get("owners", {})).items()}
            nodes = {int(k): _parse_node(v) for k, v in dict(data.get("nodes", {})).items()}
            return cls(owners, nodes)
        except KeyRegistryError as err:
            raise KeyRegistryError(f"{path}: {err}") from err
        except (ValueError, TypeError) as err:
            raise KeyRegistryError(f"{path}: {err}") from err

    def to_json(self) -> str:
        """The registry in its file format (raw keys as hex)."""
        nodes: dict[str, object] = {}
        for node_id, binding in self.nodes.items():
            key = signing.public_raw(binding.key).hex()
            nodes[str(node_id)] = (
                {"key": key, "owners": sorted(binding.owners)} if binding.owners else key
            )
        return json.dumps(
            {
                "owners": {k: signing.public_raw(v).hex() for k, v in self.owners.items()},
                "nodes": nodes,
            },
            indent=2,
            sort_keys=True,
        )

    def owner_key(self, owner_id: str) -> Ed25519PublicKey | None:
        """The key registered for ``owner_id``, or None."""
        return self._owner_keys.get(owner_id)

    def node_may_submit_for(self, node_id: int, owner_id: str) -> bool:
        """Whether ``node_id`` may submit a card that names ``owner_id`` (see the class doc)."""
        binding = self.nodes.get(node_id)
        if binding is None:
            return True
        if binding.owners:
            return owner_id in binding.owners
        key = self.owner_key(owner_id)
        return key is not None and signing.public_raw(key) == signing.public_raw(binding.key)


def _owner_keys(
    owners: Mapping[str, Ed25519PublicKey], nodes: Mapping[int, NodeBinding]
) -> dict[str, Ed25519PublicKey]:
    """Owner id -> key from both sections; an owner id with two different keys is refused."""
    keys = dict(owners)
    for node_id, binding in nodes.items():
        for owner_id in binding.owners:
            known = keys.setdefault(owner_id, binding.key)
            if signing.public_raw(known) != signing.public_raw(binding.key):
                raise KeyRegistryError(
                    f"owner {owner_id!r} is registered with two keys (node {node_id} lists it "
                    f"with key {signing.key_id(binding.key)}, elsewhere {signing.key_id(known)})"
                )
    return keys


def _parse_key(value: object) -> Ed25519PublicKey:
    if not isinstance(value, str):
        raise KeyRegistryError(f"a key must be a string, got {type(value).__name__}")
    text = value.strip()
    raw = text.encode() if text.startswith("-----BEGIN") else bytes.fromhex(text)
    return signing.load_public_key(raw)


def _parse_node(value: object) -> NodeBinding:
    """A node entry: a key, or ``{"key": ..., "owners": [...]}``."""
    if not isinstance(value, dict):
        return NodeBinding(_parse_key(value))
    if set(value) - {"key", "owners"} or "key" not in value:
        raise KeyRegistryError(
            f"a node entry needs 'key' and may have 'owners', got {sorted(value)}"
        )
    owners = value.get("owners", [])
    if not isinstance(owners, list) or not all(isinstance(o, str) and o for o in owners):
        raise KeyRegistryError("a node entry's 'owners' must be a list of owner ids")
    return NodeBinding(_parse_key(value["key"]), frozenset(owners))


@functools.lru_cache(maxsize=64)
def expected_layout(spec: ModelSpec) -> dict[str, tuple[tuple[int, ...], np.dtype[np.generic]]]:
    """Name -> (shape, numpy dtype) of the state dict a classifier of ``spec`` must have."""
    with torch.device("meta"):
        model = build_model(spec)
    return {
        name: (tuple(t.shape), np.dtype(str(t.dtype).removeprefix("torch.")))
        for name, t in model.state_dict().items()
    }


class Validator:
    """Checks submissions against size limits, the model registry and the key registry.

    Args:
        limits: size and value bounds.
        keys: registered owner keys; when non-empty every submission must be signed by the
            key registered for its card's owner id, from a node allowed to submit for it.
        seen: returns True if a digest (hex) is already accepted (duplicate / replay check).
    """

    def __init__(
        self,
        limits: Limits | None = None,
        keys: KeyRegistry | None = None,
        seen: Callable[[str], bool] | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self.keys = keys if keys is not None and len(keys) else None
        self.seen = seen or (lambda _digest: False)

    def validate(self, submission: Submission, *, node_id: int) -> ValidatedSubmission:
        """Run every check on ``submission`` from ``node_id``.

        Returns:
            The checked submission; its tensors are plain C-contiguous copies, the ones
            that were checked, digested and are to be stored.

        Raises:
            Rejected: with the reason of the first failed check.
        """
        self.check_bounds(submission)
        tensors = _plain_arrays(submission.tensors)
        submission = Submission(submission.card, tensors, submission.signature)
        try:
            card = decode_card(submission.card, max_bytes=self.limits.max_card_bytes)
            spec = spec_from_card(card)
        except CardError as err:
            reason = "architecture" if "architecture" in str(err) else "card"
            raise Rejected(reason, str(err)) from err
        self._check_input(spec)
        self._check_layout(tensors, spec)
        self._check_values(tensors)
        self._check_card_matches(card, tensors)
        try:
            digest = submission.digest()
        except SubmissionError as err:
            raise Rejected("malformed", str(err)) from err
        signed_by = self._check_signature(submission, card, node_id)
        hex_digest = digest.hex()
        if self.seen(hex_digest):
            raise Rejected("duplicate", f"digest {hex_digest[:16]} already in the pool")
        return ValidatedSubmission(
            submission, card, spec, hex_digest, owner_id=card.owner_id, signed_by=signed_by
        )

    def check_bounds(self, submission: Submission) -> None:
        """The cheap checks: types, counts and sizes, before anything is parsed or hashed.

        Raises:
            Rejected: ``malformed``, ``size`` or ``card`` (card bytes over the limit).
        """
        lim = self.limits
        if not isinstance(submission.card, bytes) or not isinstance(submission.tensors, dict):
            raise Rejected("malformed", "card must be bytes and tensors a dict")
        if not isinstance(submission.signature, bytes):
            raise Rejected("malformed", "signature must be bytes")
        if len(submission.card) > lim.max_card_bytes:
            raise Rejected(
                "card", f"card is {len(submission.card)} bytes, limit {lim.max_card_bytes}"
            )
        if len(submission.tensors) > lim.max_tensors:
            raise Rejected("size", f"{len(submission.tensors)} tensors, limit {lim.max_tensors}")
        if not all(isinstance(a, np.ndarray) for a in submission.tensors.values()):
            raise Rejected("malformed", "every tensor must be a numpy array")
        total = sum(a.nbytes for a in submission.tensors.values())
        if total > lim.max_model_bytes:
            raise Rejected("size", f"weights are {total} bytes, limit {lim.max_model_bytes}")

    def _check_input(self, spec: ModelSpec) -> None:
        """Refuse inputs the server cannot adapt: other channel counts, far-off sides."""
        lim = self.limits
        if spec.in_channels not in lim.input_channels:
            raise Rejected(
                "input",
                f"{spec.in_channels}-channel input; accepted: "
                f"{' or '.join(map(str, lim.input_channels))} channels",
            )
        if not lim.min_input_side <= spec.image_size <= lim.max_input_side:
            raise Rejected(
                "input",
                f"input side {spec.image_size} outside {lim.min_input_side}..{lim.max_input_side} "
                "(fed.max-input-scale times the meta-learner's side, either way)",
            )

    def _check_layout(self, tensors: Mapping[str, np.ndarray], spec: ModelSpec) -> None:
        expected = expected_layout(spec)
        missing = sorted(set(expected) - set(tensors))
        extra = sorted(set(tensors) - set(expected))
        if missing or extra:
            raise Rejected(
                "tensor-names",
                f"{spec.arch}: missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                f"unexpected {extra[:3]}{'...' if len(extra) > 3 else ''}",
            )
        for name, (shape, dtype) in expected.items():
            array = tensors[name]
            if array.dtype != dtype:
                raise Rejected("dtype", f"{name} is {array.dtype}, expected {dtype}")
            if tuple(array.shape) != shape:
                raise Rejected("shape", f"{name} has shape {array.shape}, expected {shape}")

    def _check_values(self, tensors: Mapping[str, np.ndarray]) -> None:
        lim = self.limits
        for name, array in tensors.items():
            if array.dtype.kind == "f":
                if not np.isfinite(array).all():
                    raise Rejected("non-finite", f"{name} holds NaN or Inf")
                if array.size and float(np.abs(array).max()) > lim.max_abs_weight:
                    raise Rejected("magnitude", f"{name} has |w| > {lim.max_abs_weight:g}")
            if name.endswith("running_var") and array.size:
                low, high = float(array.min()), float(array.max())
                if low < 0 or high > lim.max_running_var:
                    raise Rejected(
                        "batchnorm", f"{name} outside [0, {lim.max_running_var:g}]: {low}..{high}"
                    )
            if name.endswith("num_batches_tracked") and array.size and int(array.min()) < 0:
                raise Rejected("batchnorm", f"{name} is negative")

    def _check_card_matches(self, card: pb.ModelCard, tensors: Mapping[str, np.ndarray]) -> None:
        params = sum(int(a.size) for a in tensors.values())
        if card.num_parameters != params or card.num_tensors != len(tensors):
            raise Rejected(
                "card-mismatch",
                f"card claims {card.num_parameters} parameters in {card.num_tensors} tensors, "
                f"weights have {params} in {len(tensors)}",
            )

    def _check_signature(self, submission: Submission, card: pb.ModelCard, node_id: int) -> str:
        if self.keys is None:
            return ""
        owner = card.owner_id
        key = self.keys.owner_key(owner)
        if key is None:
            raise Rejected("unknown-key", f"no key registered for owner {owner!r}")
        if not self.keys.node_may_submit_for(node_id, owner):
            raise Rejected(
                "identity", f"node {node_id} is registered, but not to submit for owner {owner!r}"
            )
        kid = signing.key_id(key)
        if card.key_id and card.key_id != kid:
            raise Rejected("signature", f"card names key {card.key_id}, registered key is {kid}")
        try:
            verify_submission(key, submission)
        except signing.SignatureError as err:
            reason = "unsigned" if not submission.signature else "signature"
            raise Rejected(reason, str(err)) from err
        return kid


def _plain_arrays(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each tensor as a plain, C-contiguous ``numpy.ndarray`` copy of its raw values.

    A subclass may show checks something other than what is stored: a ``MaskedArray``'s
    reductions skip masked entries, yet its data (NaN, 3e38, ...) is what would be saved.
    The copy also keeps a caller from changing the tensors after they were checked.
    """
    return {name: np.array(a, subok=False, order="C", copy=True) for name, a in tensors.items()}
