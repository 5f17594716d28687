"""Strict .npy decoding of an owner's arrays (server.npy)."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest

from server.npy import MAX_HEADER_BYTES, NpyError, decode_npy


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _with_header(header: str, data: bytes = b"", version: int = 1) -> bytes:
    raw = header.encode("latin1")
    length = struct.pack("<H", len(raw)) if version == 1 else struct.pack("<I", len(raw))
    return b"\x93NUMPY" + bytes([version, 0]) + length + raw + data


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)),
        np.array(7, dtype=np.int64),
        np.zeros((0, 3), dtype=np.float32),
        np.array([True, False]),
    ],
    ids=["c-order", "fortran", "scalar", "empty", "bool"],
)
def test_what_numpy_save_writes_is_read_back(array: np.ndarray) -> None:
    got = decode_npy(_npy(array), dtype=str(array.dtype), shape=array.shape)
    assert got.dtype == array.dtype and got.shape == array.shape
    assert np.array_equal(got, array)
    assert not got.flags.writeable  # a view on the payload, not a copy


def test_format_2_header_is_read() -> None:
    data = np.arange(3, dtype=np.float32).tobytes()
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }".ljust(63) + "\n"
    got = decode_npy(_with_header(header, data, version=2), dtype="float32", shape=(3,))
    assert got.tolist() == [0.0, 1.0, 2.0]


GOOD = _npy(np.zeros((2, 3), np.float32))


@pytest.mark.parametrize(
    ("payload", "dtype", "shape", "message"),
    [
        (b"PK\x03\x04" + b"\x00" * 100, "float32", (2, 3), "magic"),
        (b"", "float32", (2, 3), "magic"),
        (GOOD, "float32", (3, 2), "declares"),
        (GOOD, "float64", (2, 3), "declares"),
        (GOOD[:-1], "float32", (2, 3), "needs 24"),
        (GOOD + b"\x00", "float32", (2, 3), "needs 24"),
        (GOOD[:12], "float32", (2, 3), "header"),
        (_npy(np.zeros(2, dtype="U3")), "<U3", (2,), "not a plain numeric"),
        (_npy(np.zeros(2, dtype=[("a", "<f4")])), "[('a', '<f4')]", (2,), "not a plain numeric"),
        (_npy(np.zeros(2, dtype=np.complex64)), "complex64", (2,), "not a plain numeric"),
        (
            _with_header("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }\n"),
            "object",
            (1,),
            "not a plain numeric",
        ),
        (
            _with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }\n"),
            "float32",
            (-2,),
            "negative",
        ),
        (
            _with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }\n"),
            "float32",
            (10**12,),
            "needs 4000000000000",
        ),
        (_with_header("x" * (MAX_HEADER_BYTES + 10) + "\n"), "float32", (1,), "header"),
        (_with_header("__import__('os')\n"), "float32", (1,), "header"),
        (b"\x93NUMPY\x03\x00" + b"\x00" * 20, "float32", (1,), "format 3.0"),
        (b"\x93NUMPY\x09\x00" + b"\x00" * 20, "float32", (1,), "header"),
    ],
    ids=[
        "zip",
        "empty",
        "shape-lie",
        "dtype-lie",
        "short",
        "long",
        "cut-header",
        "unicode",
        "structured",
        "complex",
        "object",
        "negative-dim",
        "huge-shape",
        "long-header",
        "code-in-header",
        "format-3",
        "unknown-version",
    ],
)
def test_hostile_payloads_are_refused(
    payload: bytes, dtype: str, shape: tuple[int, ...], message: str
) -> None:
    with pytest.raises(NpyError, match=message):
        decode_npy(payload, dtype=dtype, shape=shape)


def test_not_bytes_is_refused() -> None:
    with pytest.raises(NpyError, match="not bytes"):
        decode_npy(bytearray(GOOD), dtype="float32", shape=(2, 3))  # type: ignore[arg-type]
