"""Tiny, genuinely signed edge bundles built with onnx.helper (no torch export, milliseconds).

The graph is a nearest-prototype head on raw pixels: prototypes = onehot^T @ flatten(support),
logits = flatten(query) @ prototypes^T. :func:`tiny_model` takes the knobs the hostile-bundle
tests turn (input names, image size, versions, external data); :func:`signed_bundle` signs
the bytes with the project's own :func:`free_common.export.manifest.sign_manifest`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from onnx import TensorProto, helper, numpy_helper

from free_common.export.manifest import Bundle, sign_manifest
from free_common.proto.v1 import export_pb2

INPUT_NAMES = ("support", "support_onehot", "query")
CHANNELS, SIZE = 1, 4


@dataclass(frozen=True)
class TinyGraph:
    """What to put in the ONNX file (defaults: a graph the edge runtime accepts)."""

    version: int = 1
    input_names: tuple[str, str, str] = INPUT_NAMES
    extra_input: bool = False  # a fourth input the runtime never feeds
    output_name: str = "logits"
    image_size: int = SIZE
    metadata_version: str | None = None  # free.model_version; None: str(version)
    proto_version: int | None = None  # ModelProto.model_version; None: version
    external_data: str | None = None  # location of the scale tensor's data, if external
    padding_floats: int = 0  # an unused initializer, to make the file larger


def tiny_model(spec: TinyGraph = TinyGraph()) -> bytes:
    """Serialised ONNX model of ``spec``."""
    support, onehot, query = spec.input_names
    image = [CHANNELS, spec.image_size, spec.image_size]
    inputs = [
        helper.make_tensor_value_info(support, TensorProto.FLOAT, ["S", *image]),
        helper.make_tensor_value_info(onehot, TensorProto.FLOAT, ["S", "N"]),
        helper.make_tensor_value_info(query, TensorProto.FLOAT, ["Q", *image]),
    ]
    if spec.extra_input:
        inputs.append(helper.make_tensor_value_info("temperature", TensorProto.FLOAT, [1]))
    output = helper.make_tensor_value_info(spec.output_name, TensorProto.FLOAT, ["Q", "N"])
    nodes = [
        helper.make_node("Flatten", [support], ["support_flat"]),
        helper.make_node("Flatten", [query], ["query_flat"]),
        helper.make_node("Transpose", [onehot], ["onehot_t"]),
        helper.make_node("MatMul", ["onehot_t", "support_flat"], ["prototypes"]),
        helper.make_node("Transpose", ["prototypes"], ["prototypes_t"]),
        helper.make_node("MatMul", ["query_flat", "prototypes_t"], ["raw_logits"]),
        helper.make_node("Mul", ["raw_logits", "scale"], [spec.output_name]),
    ]
    scale = numpy_helper.from_array(np.ones(1, np.float32), "scale")
    if spec.external_data is not None:
        scale.ClearField("raw_data")
        scale.data_location = TensorProto.EXTERNAL
        for key, value in (("location", spec.external_data), ("offset", "0"), ("length", "4")):
            entry = scale.external_data.add()
            entry.key, entry.value = key, value
    initializers = [scale]
    if spec.padding_floats:
        values = np.arange(spec.padding_floats, dtype=np.float32) * spec.version
        initializers.append(numpy_helper.from_array(values, "padding"))
    graph = helper.make_graph(nodes, "tiny", inputs, [output], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    model.model_version = spec.version if spec.proto_version is None else spec.proto_version
    embedded = str(spec.version) if spec.metadata_version is None else spec.metadata_version
    helper.set_model_props(model, {"free.model_version": embedded})
    return bytes(model.SerializeToString())


def manifest(
    version: int = 1, variant: str = "proto", image_size: int = SIZE
) -> export_pb2.ExportManifest:
    """An unsigned manifest with limits that admit 2..5-way episodes."""
    m = export_pb2.ExportManifest(model_name="tiny", variant=variant, model_version=version)
    m.input.layout, m.input.channels, m.input.image_size = "NCHW", CHANNELS, image_size
    m.limits.min_ways, m.limits.max_ways, m.limits.max_shots, m.limits.max_queries = 2, 5, 5, 20
    return m


def signed_bundle(
    private_key: Ed25519PrivateKey,
    onnx_bytes: bytes | None = None,
    m: export_pb2.ExportManifest | None = None,
) -> Bundle:
    """``onnx_bytes`` (default: a loadable tiny model) signed under ``m`` (default manifest)."""
    m = manifest() if m is None else m
    data = tiny_model(TinyGraph(version=int(m.model_version))) if onnx_bytes is None else onnx_bytes
    return sign_manifest(m, data, private_key)
