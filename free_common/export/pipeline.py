"""One call from a trained backbone to a signed edge bundle on disk."""

from __future__ import annotations

import json
import logging
import tomllib
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path

import onnx
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from free_common.export.episode_graph import HeadConfig, episode_module
from free_common.export.manifest import Bundle, bundle_dir_name, sign_manifest, write_bundle
from free_common.export.onnx_export import (
    INPUT_NAMES,
    OPSET,
    OUTPUT_NAME,
    ExportLimits,
    export_episode_onnx,
)
from free_common.models import Classifier, ModelSpec
from free_common.proto.v1 import export_pb2

__all__ = [
    "ExportRequest",
    "build_bundle",
    "derive_bundle",
    "export_bundle",
    "project_version",
]

logger = logging.getLogger(__name__)

_HEAD_KIND = {
    "proto": export_pb2.HEAD_KIND_PROTOTYPE,
    "protomaml": export_pb2.HEAD_KIND_PROTO_MAML,
}


def project_version() -> str:
    """The installed ``free-fed`` version, else the one in the repository's pyproject."""
    try:
        return importlib_metadata.version("free-fed")
    except importlib_metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        if pyproject.exists():
            return str(tomllib.loads(pyproject.read_text())["project"]["version"])
        return "unknown"


@dataclass(frozen=True)
class ExportRequest:
    """What to export and how to label it.

    Attributes:
        model_name: name shared by every version of this model, e.g. ``"free-conv4"``.
        model_version: positive, increasing across releases (edges refuse rollbacks).
        head: the episode head (prototype or Proto-MAML) and its settings.
        variant: label of this graph among the model's files; defaults to the head kind.
        limits: largest episode accepted.
        selection_json: why this model ships (the server's meta-val comparison, JSON),
            signed into the manifest; "" when none was made.
    """

    model_name: str
    model_version: int
    head: HeadConfig = field(default_factory=HeadConfig)
    variant: str = ""
    limits: ExportLimits = field(default_factory=ExportLimits)
    selection_json: str = ""

    def __post_init__(self) -> None:
        """Check the name, variant and version."""
        if self.model_version < 1:
            raise ValueError(f"model_version must be >= 1, got {self.model_version}")
        for label in (self.model_name, self.resolved_variant):
            if not label or not all(c.isalnum() or c in "-_." for c in label):
                raise ValueError(f"names may hold only letters, digits, '-', '_', '.': {label!r}")

    @property
    def resolved_variant(self) -> str:
        """The variant label (head kind when not given)."""
        return self.variant or self.head.kind


def _manifest(request: ExportRequest, spec: ModelSpec) -> export_pb2.ExportManifest:
    """Manifest fields that do not depend on the ONNX bytes."""
    m = export_pb2.ExportManifest(
        model_name=request.model_name,
        variant=request.resolved_variant,
        model_version=request.model_version,
        head=_HEAD_KIND[request.head.kind],
        batch_norm=export_pb2.BATCH_NORM_MODE_SUPPORT_STATS,
        model_spec_json=spec.to_json(),
        selection_json=request.selection_json,
    )
    m.input.layout, m.input.dtype = "NCHW", "float32"
    m.input.channels, m.input.image_size = spec.in_channels, spec.image_size
    m.input.pixel_min, m.input.pixel_max = 0.0, 1.0
    m.normalisation.in_graph = True
    m.normalisation.mean.extend(spec.mean)
    m.normalisation.std.extend(spec.std)
    m.versions.project, m.versions.torch = project_version(), torch.__version__
    m.versions.onnx, m.versions.opset, m.versions.exporter = onnx.__version__, OPSET, "dynamo"
    m.limits.min_ways = 2
    m.limits.max_ways = request.limits.max_ways
    m.limits.max_shots = request.limits.max_shots
    m.limits.max_queries = request.limits.max_queries
    if request.head.kind == "protomaml":
        m.adaptation.steps, m.adaptation.learning_rate = request.head.steps, request.head.lr
    return m


def _onnx_metadata(manifest: export_pb2.ExportManifest, scale: float) -> dict[str, str]:
    """Informational ``metadata_props`` (the signed manifest is what is trusted)."""
    return {
        "free.schema": "1",
        "free.model_name": manifest.model_name,
        "free.variant": manifest.variant,
        "free.model_version": str(manifest.model_version),
        "free.inputs": ",".join(INPUT_NAMES),
        "free.output": OUTPUT_NAME,
        "free.layout": "NCHW",
        "free.channels": str(manifest.input.channels),
        "free.image_size": str(manifest.input.image_size),
        "free.pixel_range": "[0,1]",
        "free.dtype": "float32",
        "free.normalisation": "in_graph",
        "free.norm_mean": json.dumps(list(manifest.normalisation.mean)),
        "free.norm_std": json.dumps(list(manifest.normalisation.std)),
        "free.head": "protomaml" if manifest.head == export_pb2.HEAD_KIND_PROTO_MAML else "proto",
        "free.logit_scale": repr(scale),
        "free.adapt_steps": str(manifest.adaptation.steps),
        "free.adapt_lr": repr(manifest.adaptation.learning_rate),
        "free.bn_mode": "support_stats",
        "free.max_ways": str(manifest.limits.max_ways),
        "free.max_shots": str(manifest.limits.max_shots),
        "free.max_queries": str(manifest.limits.max_queries),
        "free.version.project": manifest.versions.project,
        "free.version.torch": manifest.versions.torch,
        "free.version.onnx": manifest.versions.onnx,
        "free.version.opset": str(manifest.versions.opset),
        "free.exporter": manifest.versions.exporter,
        "free.model_spec": manifest.model_spec_json,
    }


def build_bundle(
    model: Classifier, spec: ModelSpec, request: ExportRequest, private_key: Ed25519PrivateKey
) -> Bundle:
    """Export ``model`` as an episode graph and sign its manifest (nothing written).

    Args:
        model: meta-learner backbone with ``forward_features`` and ``num_features``.
        spec: its model spec (input channels, image size, normalisation).
        request: names, version, head and limits.
        private_key: the server's Ed25519 signing key.
    """
    scale = request.head.resolved_scale(model.num_features)
    manifest = _manifest(request, spec)
    manifest.logit_scale = scale
    module = episode_module(model, request.head)
    data = export_episode_onnx(
        module, spec, request.limits, _onnx_metadata(manifest, scale), request.model_version
    )
    manifest.versions.ir_version = onnx.load_from_string(data).ir_version
    return sign_manifest(manifest, data, private_key)


def export_bundle(
    model: Classifier,
    spec: ModelSpec,
    request: ExportRequest,
    private_key: Ed25519PrivateKey,
    export_dir: Path,
) -> Path:
    """:func:`build_bundle`, then write it to ``export_dir/<name>-<variant>-v<version>/``."""
    bundle = build_bundle(model, spec, request, private_key)
    manifest = export_pb2.ExportManifest.FromString(bundle.manifest)
    path = write_bundle(bundle, Path(export_dir) / bundle_dir_name(manifest))
    logger.info("wrote %s (%d ONNX bytes, sha256 %s)", path, len(bundle.onnx), manifest.onnx_sha256)
    return path


def derive_bundle(
    base: Bundle, onnx_bytes: bytes, variant: str, private_key: Ed25519PrivateKey
) -> Bundle:
    """Sign a transformed copy of ``base``'s model (e.g. int8) under a new variant name.

    Everything else in the manifest (version, input spec, limits, head) is inherited.
    """
    manifest = export_pb2.ExportManifest.FromString(base.manifest)
    manifest.variant = variant
    manifest.created_unix_ms = 0  # re-stamped by sign_manifest
    return sign_manifest(manifest, onnx_bytes, private_key)
