"""Run a verified episode graph with ONNX Runtime: adapt on a support set, classify queries.

Imports numpy and onnxruntime only (no torch). The graph takes ``support`` (S, C, H, W),
``support_onehot`` (S, N) and ``query`` (Q, C, H, W), float32 pixels in [0, 1], and returns
``logits`` (Q, N); normalisation and BatchNorm (support statistics) happen inside.

:func:`open_session` is the one place that decides whether verified bytes load: the CLI's
``verify``, the pull cache and :class:`EdgeModel` all go through it, so nothing reports a
bundle as good that the runtime then refuses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from client.edge.onnx_wire import OnnxFormatError, check_model_bytes
from client.edge.verify import VerificationError, VerifiedModel, read_bundle
from free_common.proto.v1 import export_pb2

__all__ = ["EdgeModel", "EpisodeInputError", "Prediction", "open_session", "softmax"]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
INPUT_NAMES = ("support", "support_onehot", "query")
OUTPUT_NAMES = ("logits",)
_INPUT_RANKS = {"support": 4, "support_onehot": 2, "query": 4}


class EpisodeInputError(ValueError):
    """Support or query arrays do not match what the model accepts."""


@dataclass(frozen=True)
class Prediction:
    """Per-query result.

    Attributes:
        labels: predicted class index per query, shape (Q,).
        scores: softmax probability of the predicted class, shape (Q,).
        logits: raw logits, shape (Q, N).
    """

    labels: npt.NDArray[np.int64]
    scores: FloatArray
    logits: FloatArray


def softmax(logits: FloatArray) -> FloatArray:
    """Row-wise softmax of (Q, N) logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    probs: FloatArray = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
    return probs


def _check_limits(manifest: export_pb2.ExportManifest) -> None:
    """The signed episode limits and image size must admit at least one episode."""
    limits, size = manifest.limits, manifest.input.image_size
    admits = max(limits.min_ways, 1) <= limits.max_ways and limits.max_shots >= 1
    if not admits or limits.max_queries < 1 or size < 1:
        raise VerificationError(
            f"signed limits admit no episode: ways {limits.min_ways}..{limits.max_ways}, "
            f"shots <= {limits.max_shots}, queries <= {limits.max_queries}, image size {size}"
        )


def _check_graph(session: ort.InferenceSession, manifest: export_pb2.ExportManifest) -> None:
    """The graph's inputs, output and version metadata must agree with the signed manifest."""
    inputs = session.get_inputs()
    names = tuple(i.name for i in inputs)
    if names != INPUT_NAMES:
        raise VerificationError(f"graph inputs {names}, expected {INPUT_NAMES}")
    outputs = tuple(o.name for o in session.get_outputs())
    if outputs != OUTPUT_NAMES:
        raise VerificationError(f"graph outputs {outputs}, expected {OUTPUT_NAMES}")
    image = [manifest.input.channels, manifest.input.image_size, manifest.input.image_size]
    for arg in inputs:
        shape = list(arg.shape)
        if arg.type != "tensor(float)" or len(shape) != _INPUT_RANKS[arg.name]:
            raise VerificationError(f"graph input {arg.name} is {arg.type} {shape}")
        is_image = arg.name != "support_onehot"
        if is_image and any(
            isinstance(d, int) and d != want for d, want in zip(shape[1:], image, strict=True)
        ):
            raise VerificationError(
                f"graph input {arg.name} has shape {shape}, signed input is (B, {image})"
            )
    meta = session.get_modelmeta()
    embedded = meta.custom_metadata_map.get("free.model_version")
    if embedded != str(manifest.model_version) or meta.version != manifest.model_version:
        raise VerificationError(
            f"graph metadata says version {embedded} (ModelProto {meta.version}), "
            f"manifest {manifest.model_version}"
        )


def open_session(verified: VerifiedModel, threads: int = 2) -> ort.InferenceSession:
    """Load verified ONNX bytes into ONNX Runtime after checking everything loading needs.

    Checks, in order: the signed limits admit an episode; the bytes are an ONNX model with
    no external data; ONNX Runtime accepts the graph; its inputs, output, image shape and
    version metadata agree with the signed manifest.

    Args:
        verified: output of :func:`client.edge.verify.verify_bundle` or ``read_bundle``.
        threads: ONNX Runtime intra-op threads (0: runtime default).

    Raises:
        VerificationError: any check failed.
    """
    _check_limits(verified.manifest)
    try:
        check_model_bytes(verified.onnx_bytes)
    except OnnxFormatError as err:
        raise VerificationError(f"verified model is not a self-contained ONNX file: {err}") from err
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # No busy-waiting worker threads: on a shared or battery-powered device spinning burns
    # CPU for nothing; the cost on an idle machine is within run-to-run noise.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(
            verified.onnx_bytes, options, providers=["CPUExecutionProvider"]
        )
    except Exception as err:  # ORT raises its own exception types
        raise VerificationError(f"verified model does not load in ONNX Runtime: {err}") from err
    _check_graph(session, verified.manifest)
    return session


class EdgeModel:
    """An ONNX Runtime session over verified bytes plus the manifest that vouched for them.

    Args:
        verified: output of :func:`client.edge.verify.verify_bundle`.
        threads: ONNX Runtime intra-op threads (0: runtime default).

    Raises:
        VerificationError: the bytes do not load (see :func:`open_session`).
    """

    def __init__(self, verified: VerifiedModel, threads: int = 2) -> None:
        self.manifest: export_pb2.ExportManifest = verified.manifest
        self._session = open_session(verified, threads)

    @classmethod
    def from_bundle(
        cls,
        directory: str | Path,
        public_key: Ed25519PublicKey,
        *,
        min_version: int = 0,
        threads: int = 2,
    ) -> EdgeModel:
        """Verify the bundle in ``directory`` and load it."""
        return cls(read_bundle(directory, public_key, min_version=min_version), threads)

    @property
    def model_version(self) -> int:
        """Version from the signed manifest."""
        return int(self.manifest.model_version)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every input image."""
        spec = self.manifest.input
        return int(spec.channels), int(spec.image_size), int(spec.image_size)

    def _check_images(self, name: str, images: FloatArray, limit: int) -> FloatArray:
        if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise EpisodeInputError(
                f"{name} must have shape (B, {', '.join(map(str, self.image_shape))}), "
                f"got {images.shape}"
            )
        if not 1 <= images.shape[0] <= limit:
            raise EpisodeInputError(f"{name} holds {images.shape[0]} images; allowed 1..{limit}")
        images = np.ascontiguousarray(images, dtype=np.float32)
        if not np.isfinite(images).all() or images.min() < 0.0 or images.max() > 1.0:
            raise EpisodeInputError(f"{name} pixels must be finite floats in [0, 1]")
        return images

    def _onehot(self, labels: npt.ArrayLike, n_support: int) -> FloatArray:
        lab = np.asarray(labels)
        if lab.shape != (n_support,) or not np.issubdtype(lab.dtype, np.integer):
            raise EpisodeInputError(f"need {n_support} integer support labels, got {lab.shape}")
        n_way = int(lab.max()) + 1 if lab.size else 0
        limits = self.manifest.limits
        if lab.min() < 0 or not limits.min_ways <= n_way <= limits.max_ways:
            raise EpisodeInputError(
                f"support labels must be 0..N-1 with {limits.min_ways} <= N <= {limits.max_ways}"
            )
        counts = np.bincount(lab, minlength=n_way)
        if counts.min() == 0 or counts.max() > limits.max_shots:
            raise EpisodeInputError(
                f"each class needs 1..{limits.max_shots} support images, got counts {counts}"
            )
        onehot: FloatArray = np.eye(n_way, dtype=np.float32)[lab]
        return onehot

    def logits(
        self, support: FloatArray, support_labels: npt.ArrayLike, query: FloatArray
    ) -> FloatArray:
        """Query logits (Q, N).

        Args:
            support: (S, C, H, W) float pixels in [0, 1].
            support_labels: (S,) ints in 0..N-1, every class present.
            query: (Q, C, H, W) float pixels in [0, 1].
        """
        limits = self.manifest.limits
        support = self._check_images("support", support, limits.max_ways * limits.max_shots)
        query = self._check_images("query", query, limits.max_queries)
        onehot = self._onehot(support_labels, support.shape[0])
        feeds = {"support": support, "support_onehot": onehot, "query": query}
        (out,) = self._session.run(None, feeds)
        return np.asarray(out, dtype=np.float32)

    def predict(
        self, support: FloatArray, support_labels: npt.ArrayLike, query: FloatArray
    ) -> Prediction:
        """Adapt on the support set and classify every query."""
        logits = self.logits(support, support_labels, query)
        probs = softmax(logits)
        labels = probs.argmax(axis=1).astype(np.int64)
        return Prediction(labels, probs[np.arange(len(labels)), labels], logits)
