"""Export an episode graph to one self-contained ONNX file (bytes) with metadata.

The dynamo exporter (``torch.onnx.export(dynamo=True)``, opset 18) is used: it passes
``onnx.checker.check_model(full_check=True)`` and matches PyTorch within 1e-4 on the
episode graphs of :mod:`free_common.export.episode_graph`. Node metadata (stack traces,
source paths) and doc strings are stripped so the file leaks nothing about the build host.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import onnx
import torch
from torch import nn

from free_common.models.spec import ModelSpec

__all__ = [
    "INPUT_NAMES",
    "OPSET",
    "OUTPUT_NAME",
    "ExportError",
    "ExportLimits",
    "export_episode_onnx",
    "strip_debug_info",
]

logger = logging.getLogger(__name__)

OPSET = 18
INPUT_NAMES = ("support", "support_onehot", "query")
OUTPUT_NAME = "logits"
# Example sizes for tracing: no 0/1 sizes and S != N, or torch.export specialises the axes.
_EXAMPLE_WAYS, _EXAMPLE_SHOTS, _EXAMPLE_QUERIES = 5, 2, 15


class ExportError(ValueError):
    """The graph cannot be exported or the exported file fails its checks."""


@dataclass(frozen=True)
class ExportLimits:
    """Largest episode the graph is exported and tested for.

    Attributes:
        max_ways: classes per episode (N).
        max_shots: support images per class (S <= N * K).
        max_queries: query images per call (Q).
    """

    max_ways: int = 50
    max_shots: int = 50
    max_queries: int = 1000

    def __post_init__(self) -> None:
        """Every limit must exceed the example sizes used for tracing."""
        if self.max_ways <= _EXAMPLE_WAYS or self.max_shots <= _EXAMPLE_SHOTS:
            raise ExportError(f"limits too small for tracing: {self}")
        if self.max_queries <= _EXAMPLE_QUERIES:
            raise ExportError(f"max_queries must exceed {_EXAMPLE_QUERIES}, got {self}")


def _example_inputs(spec: ModelSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random support (10, C, H, W), one-hot (10, 5), query (15, C, H, W) in [0, 1]."""
    gen = torch.Generator().manual_seed(0)
    shape = (spec.in_channels, spec.image_size, spec.image_size)
    n_support = _EXAMPLE_WAYS * _EXAMPLE_SHOTS
    support = torch.rand((n_support, *shape), generator=gen)
    labels = torch.arange(n_support) % _EXAMPLE_WAYS
    onehot = torch.nn.functional.one_hot(labels, _EXAMPLE_WAYS).float()
    query = torch.rand((_EXAMPLE_QUERIES, *shape), generator=gen)
    return support, onehot, query


def strip_debug_info(model: onnx.ModelProto) -> None:
    """Remove node metadata (stack traces, file paths) and every doc string, in place."""
    model.doc_string = ""
    model.graph.doc_string = ""
    nodes = [*model.graph.node, *(n for f in model.functions for n in f.node)]
    for function in model.functions:
        function.doc_string = ""
        del function.metadata_props[:]
    for node in nodes:
        node.doc_string = ""
        del node.metadata_props[:]
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        value.doc_string = ""
    del model.graph.metadata_props[:]


def export_episode_onnx(
    module: nn.Module,
    spec: ModelSpec,
    limits: ExportLimits,
    metadata: Mapping[str, str],
    model_version: int,
) -> bytes:
    """Export an episode module to ONNX bytes (no external data) and check them.

    Args:
        module: ``forward(support (S, C, H, W), support_onehot (S, N), query (Q, C, H, W))
            -> logits (Q, N)``, in eval mode.
        spec: the backbone's spec (channels and image size of the inputs).
        limits: upper bounds of the dynamic axes.
        metadata: string key/values written to ``metadata_props``.
        model_version: written to ``ModelProto.model_version``.

    Returns:
        The serialised model, which passes ``onnx.checker.check_model(full_check=True)``.
    """
    dim = torch.export.Dim
    n_support = dim("n_support", min=2, max=limits.max_ways * limits.max_shots)
    n_way = dim("n_way", min=2, max=limits.max_ways)
    n_query = dim("n_query", min=1, max=limits.max_queries)
    dynamic_shapes = ({0: n_support}, {0: n_support, 1: n_way}, {0: n_query})
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # exporter chatter; the checks below are what count
        program = torch.onnx.export(
            module.eval(),
            _example_inputs(spec),
            dynamo=True,
            opset_version=OPSET,
            external_data=False,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_shapes=dynamic_shapes,
            optimize=True,
            verbose=False,
        )
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    model = program.model_proto
    strip_debug_info(model)
    model.producer_name = "free-fed"
    model.model_version = model_version
    onnx.helper.set_model_props(model, dict(metadata))
    data = model.SerializeToString()
    try:
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    except onnx.checker.ValidationError as err:
        raise ExportError(f"exported model fails the ONNX checker: {err}") from err
    logger.info("exported ONNX graph: %d bytes, %d nodes", len(data), len(model.graph.node))
    return data
