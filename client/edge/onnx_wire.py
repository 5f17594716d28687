"""Check ONNX bytes at the protobuf wire level, without the ``onnx`` package.

Two facts are read before ONNX Runtime sees the bytes: that they parse as an ONNX
``ModelProto`` with a graph, and that no tensor keeps its data outside the file. The signed
hash covers ``model.onnx`` only, so a tensor stored externally would load bytes nobody
verified (ONNX Runtime resolves such paths against the working directory).

Field numbers are those of ``onnx.proto`` (ONNX 1.x, unchanged since external data was added).
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["OnnxFormatError", "check_model_bytes"]

# wire types
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
_MAX_DEPTH = 64  # nested subgraphs (If/Loop bodies); real models use a handful

# (message, field number) -> message type of that length-delimited field, for every path
# from ModelProto to a TensorProto.
_CHILDREN: dict[tuple[str, int], str] = {
    ("model", 7): "graph",  # ModelProto.graph
    ("model", 20): "training_info",  # ModelProto.training_info
    ("model", 25): "function",  # ModelProto.functions
    ("training_info", 1): "graph",  # TrainingInfoProto.initialization
    ("training_info", 2): "graph",  # TrainingInfoProto.algorithm
    ("graph", 1): "node",  # GraphProto.node
    ("graph", 5): "tensor",  # GraphProto.initializer
    ("graph", 15): "sparse",  # GraphProto.sparse_initializer
    ("function", 7): "node",  # FunctionProto.node
    ("function", 11): "attribute",  # FunctionProto.attribute_proto
    ("node", 5): "attribute",  # NodeProto.attribute
    ("attribute", 5): "tensor",  # AttributeProto.t
    ("attribute", 6): "graph",  # AttributeProto.g
    ("attribute", 10): "tensor",  # AttributeProto.tensors
    ("attribute", 11): "graph",  # AttributeProto.graphs
    ("attribute", 22): "sparse",  # AttributeProto.sparse_tensor
    ("attribute", 23): "sparse",  # AttributeProto.sparse_tensors
    ("sparse", 1): "tensor",  # SparseTensorProto.values
    ("sparse", 2): "tensor",  # SparseTensorProto.indices
}
_MODEL_GRAPH = 7
_TENSOR_EXTERNAL_DATA = 13
_TENSOR_DATA_LOCATION = 14
_EXTERNAL = 1


class OnnxFormatError(ValueError):
    """The bytes are not an ONNX model, or a tensor keeps its data outside the file."""


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise OnnxFormatError("truncated or malformed protobuf varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def _fields(data: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of every field of one message."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | memoryview
        if wire == _VARINT:
            value, pos = _varint(data, pos)
        elif wire in (_FIXED64, _FIXED32):
            width = 8 if wire == _FIXED64 else 4
            value, pos = int.from_bytes(data[pos : pos + width], "little"), pos + width
        elif wire == _LENGTH:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        else:
            raise OnnxFormatError(f"protobuf wire type {wire} is not used by ONNX")
        if number == 0 or pos > len(data):
            raise OnnxFormatError("truncated or malformed protobuf message")
        yield number, wire, value


def _check_tensor(data: memoryview) -> None:
    for number, _, value in _fields(data):
        external = number == _TENSOR_EXTERNAL_DATA or (
            number == _TENSOR_DATA_LOCATION and value == _EXTERNAL
        )
        if external:
            raise OnnxFormatError("a tensor keeps its data in an external file")


def _walk(kind: str, data: memoryview, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise OnnxFormatError(f"graphs nested deeper than {_MAX_DEPTH} levels")
    for number, wire, value in _fields(data):
        child = _CHILDREN.get((kind, number))
        if child is None:
            continue
        if wire != _LENGTH or not isinstance(value, memoryview):
            raise OnnxFormatError(f"field {number} of an ONNX {kind} has the wrong wire type")
        if child == "tensor":
            _check_tensor(value)
        else:
            _walk(child, value, depth + 1)


def check_model_bytes(onnx_bytes: bytes) -> None:
    """Refuse bytes that are not an ONNX ``ModelProto`` with a graph, or use external data.

    Raises:
        OnnxFormatError: malformed protobuf, no graph, or a tensor with external data.
    """
    data = memoryview(onnx_bytes)
    if not any(n == _MODEL_GRAPH and w == _LENGTH for n, w, _ in _fields(data)):
        raise OnnxFormatError("no ONNX graph in the file")
    _walk("model", data, 0)
