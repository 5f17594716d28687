"""A data owner's submission (weights + card + signature) and its canonical digest.

The digest is what gets signed and what the pool deduplicates on. It is SHA-256 over:

* the domain tag :data:`DIGEST_TAG`;
* the card bytes, length-prefixed;
* every tensor in sorted-name order: its UTF-8 name, its dtype name (``"float32"``), its
  rank and shape (little-endian u64) and its raw little-endian C-order bytes, each part
  length-prefixed so that no two different submissions hash the same stream.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from free_common import signing

__all__ = [
    "DIGEST_TAG",
    "Submission",
    "SubmissionError",
    "canonical_digest",
    "demo_private_key",
    "sign_submission",
    "tensors_from_state_dict",
    "verify_submission",
]

DIGEST_TAG = b"free-fed/submission/v1\x00"
Tensors = Mapping[str, npt.NDArray[np.generic]]


class SubmissionError(ValueError):
    """A submission cannot be digested (bad tensor names or types)."""


@dataclass(frozen=True)
class Submission:
    """What a data owner sends: never data, only weights, a card and a signature.

    Attributes:
        card: serialised :class:`~free_common.proto.v1.model_card_pb2.ModelCard` bytes.
        tensors: the classifier's state dict as numpy arrays (name -> array).
        signature: 64-byte Ed25519 signature over :func:`canonical_digest`, or b"".
    """

    card: bytes
    tensors: dict[str, npt.NDArray[np.generic]] = field(repr=False)
    signature: bytes = b""

    def digest(self) -> bytes:
        """:func:`canonical_digest` of the card and tensors."""
        return canonical_digest(self.card, self.tensors)


def _u64(n: int) -> bytes:
    return struct.pack("<Q", n)


def canonical_digest(card: bytes, tensors: Tensors) -> bytes:
    """SHA-256 over the card bytes and every tensor, in a layout-independent way.

    Args:
        card: the card bytes exactly as shipped.
        tensors: name -> array; arrays are read as little-endian C-order bytes.

    Returns:
        The 32-byte digest.

    Raises:
        SubmissionError: a name is not a string or a value is not a numpy array.
    """
    h = hashlib.sha256(DIGEST_TAG)
    h.update(_u64(len(card)))
    h.update(card)
    h.update(_u64(len(tensors)))
    for name in sorted(tensors):
        if not isinstance(name, str):
            raise SubmissionError(f"tensor names must be strings, got {type(name).__name__}")
        array = tensors[name]
        if not isinstance(array, np.ndarray):
            raise SubmissionError(f"tensor {name!r} is {type(array).__name__}, not an array")
        encoded = name.encode("utf-8", "surrogatepass")
        dtype = array.dtype.name.encode()
        data = np.asarray(array, dtype=array.dtype.newbyteorder("<"), order="C").tobytes()
        h.update(_u64(len(encoded)) + encoded)
        h.update(_u64(len(dtype)) + dtype)
        h.update(_u64(array.ndim) + b"".join(_u64(d) for d in array.shape))
        h.update(_u64(len(data)))
        h.update(data)
    return h.digest()


def sign_submission(private_key: Ed25519PrivateKey, card: bytes, tensors: Tensors) -> bytes:
    """Ed25519 signature over :func:`canonical_digest` of ``card`` and ``tensors``."""
    return signing.sign(private_key, canonical_digest(card, tensors))


def verify_submission(public_key: Ed25519PublicKey, submission: Submission) -> None:
    """Check a submission's signature.

    Raises:
        free_common.signing.SignatureError: missing, truncated or not matching.
    """
    if not submission.signature:
        raise signing.SignatureError("submission is not signed")
    signing.verify(public_key, submission.signature, submission.digest())


def tensors_from_state_dict(
    state: Mapping[str, torch.Tensor],
) -> dict[str, npt.NDArray[np.generic]]:
    """A torch state dict as CPU numpy arrays (copies, C-order)."""
    return {k: np.array(v.detach().cpu().numpy(), order="C", copy=True) for k, v in state.items()}


def demo_private_key(secret: str, owner_id: str) -> Ed25519PrivateKey:
    """A key derived from a shared secret: SIMULATION ONLY, never in a deployment.

    Simulated owners and the server derive the same key pairs from the run's
    ``fed.demo-key-secret``, which exercises the signature path end to end without a key
    exchange. Anyone who knows the secret can forge submissions, so a deployment registers
    real per-owner keys instead (``fed.key-registry``).
    """
    seed = hashlib.sha256(b"free-fed/demo-key\x00" + secret.encode() + b"\x00" + owner_id.encode())
    return Ed25519PrivateKey.from_private_bytes(seed.digest())
