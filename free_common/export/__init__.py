"""ONNX export of the meta-learner for edge devices, with a signed manifest.

Modules: :mod:`.episode_graph` (the torch episode graphs and their BatchNorm semantics),
:mod:`.onnx_export` (dynamo export, metadata, checks), :mod:`.manifest` (signing, bundle
files), :mod:`.reference` (PyTorch evaluation of the same rule), :mod:`.pipeline` (all in one).
"""

from free_common.export.episode_graph import HeadConfig, episode_module
from free_common.export.manifest import Bundle, sign_manifest, write_bundle
from free_common.export.onnx_export import ExportError, ExportLimits, export_episode_onnx
from free_common.export.pipeline import ExportRequest, build_bundle, export_bundle
from free_common.export.reference import reference_logits, support_stats_features

__all__ = [
    "Bundle",
    "ExportError",
    "ExportLimits",
    "ExportRequest",
    "HeadConfig",
    "build_bundle",
    "episode_module",
    "export_bundle",
    "export_episode_onnx",
    "reference_logits",
    "sign_manifest",
    "support_stats_features",
    "write_bundle",
]
