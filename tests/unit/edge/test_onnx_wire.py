"""The wire-level ONNX check finds external data wherever a tensor can sit, and refuses junk."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import GraphProto, TensorProto, helper, numpy_helper

from client.edge.onnx_wire import OnnxFormatError, check_model_bytes
from tests.edge_bundles import TinyGraph, tiny_model


def _external(name: str) -> TensorProto:
    tensor = numpy_helper.from_array(np.ones(1, np.float32), name)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "weights.bin"
    return tensor


def _branch(name: str, initializer: TensorProto | None = None) -> GraphProto:
    out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [1])
    node = helper.make_node("Identity", ["x"], [f"{name}_out"])
    return helper.make_graph([node], name, [], [out], [initializer] if initializer else [])


def _model_with(node: helper.NodeProto, initializers: list[TensorProto] | None = None) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([node], "g", [x, cond], [out], initializers or [])
    return bytes(helper.make_model(graph).SerializeToString())


def _if(then_init: TensorProto | None) -> helper.NodeProto:
    return helper.make_node(
        "If",
        ["cond"],
        ["y"],
        then_branch=_branch("then", then_init),
        else_branch=_branch("else"),
    )


def test_self_contained_models_pass() -> None:
    check_model_bytes(tiny_model(TinyGraph()))
    check_model_bytes(_model_with(_if(None)))


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(lambda: _model_with(_if(_external("w"))), id="if-branch-initializer"),
        pytest.param(
            lambda: _model_with(helper.make_node("Constant", [], ["y"], value=_external("c"))),
            id="constant-attribute",
        ),
        pytest.param(
            lambda: _model_with(
                helper.make_node("Identity", ["x"], ["y"]),
                [_external("w")],
            ),
            id="graph-initializer",
        ),
    ],
)
def test_external_data_anywhere_is_refused(model: object) -> None:
    with pytest.raises(OnnxFormatError, match="external"):
        check_model_bytes(model())  # type: ignore[operator]


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff" * 16, b"\x0a\x05abc", b"\x08" + b"\x80" * 20, b"\x0b\x0c"],
    ids=["empty", "bad-varint", "truncated-field", "endless-varint", "group-wire-type"],
)
def test_junk_is_refused(data: bytes) -> None:
    with pytest.raises(OnnxFormatError):
        check_model_bytes(data)


def test_deeply_nested_graphs_are_refused_without_recursion_error() -> None:
    graph = b""
    # GraphProto.node -> NodeProto.attribute -> AttributeProto.g, beyond the recursion limit
    for _ in range(400):
        attribute = b"\x32" + _length(graph) + graph  # field 6 (g), length-delimited
        node = b"\x2a" + _length(attribute) + attribute  # field 5 (attribute)
        graph = b"\x0a" + _length(node) + node  # field 1 (node)
    model = b"\x3a" + _length(graph) + graph  # ModelProto field 7 (graph)
    with pytest.raises(OnnxFormatError, match="nested"):
        check_model_bytes(model)


def _length(data: bytes) -> bytes:
    value, out = len(data), bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
