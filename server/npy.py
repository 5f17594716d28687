"""Strict reading of one ``.npy`` payload sent by an untrusted owner.

Flower ships each array of a reply as numpy's ``.npy`` bytes, and ``Array.numpy()`` hands
them to ``numpy.load``, which also opens zip archives (a zip central directory is parsed in
full before anything can be refused) and trusts the header's sizes. :func:`decode_npy`
accepts only what an owner's ``numpy.save`` of a plain numeric array produces: the ``.npy``
magic, a format 1.0 or 2.0 header of at most :data:`MAX_HEADER_BYTES`, a numeric dtype, and
exactly as many data bytes as the header's dtype and shape need; all of it is checked before
the array is made, and the array is a read-only view on the payload (no copy).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np

__all__ = ["MAX_HEADER_BYTES", "NpyError", "decode_npy"]

MAX_HEADER_BYTES = 4096
_MAGIC = b"\x93NUMPY"
_NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floats


class NpyError(ValueError):
    """A payload is not the ``.npy`` of a plain numeric array of the declared dtype and shape."""


def decode_npy(data: bytes, *, dtype: str, shape: Sequence[int]) -> np.ndarray:
    """The array in ``data``, which must be ``.npy`` bytes of ``dtype`` and ``shape``.

    Args:
        data: the payload.
        dtype: the dtype the sender declared (e.g. ``"float32"``).
        shape: the shape the sender declared.

    Returns:
        A read-only array viewing ``data``.

    Raises:
        NpyError: not ``.npy``; header too long, malformed or of another version; object,
            structured or non-numeric dtype; dtype or shape not as declared; data bytes not
            exactly as many as the header needs.
    """
    if not isinstance(data, bytes):
        raise NpyError(f"payload is {type(data).__name__}, not bytes")
    if not data.startswith(_MAGIC):
        raise NpyError(f"payload does not start with the .npy magic (first bytes {data[:8]!r})")
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(stream, max_header_size=MAX_HEADER_BYTES)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(stream, max_header_size=MAX_HEADER_BYTES)
        else:
            raise NpyError(f".npy format {version[0]}.{version[1]} is not accepted")
    except ValueError as err:  # numpy's own refusal of a bad or oversized header
        raise NpyError(f"bad .npy header: {err}") from err
    header_shape, fortran_order, header_dtype = header
    if header_dtype.kind not in _NUMERIC_KINDS or header_dtype.fields or header_dtype.subdtype:
        raise NpyError(f".npy dtype {header_dtype} is not a plain numeric dtype")
    if str(header_dtype) != dtype or tuple(header_shape) != tuple(shape):
        raise NpyError(
            f".npy header says {header_dtype} {tuple(header_shape)}, "
            f"the array declares {dtype} {tuple(shape)}"
        )
    if any(d < 0 for d in header_shape):
        raise NpyError(f".npy shape {tuple(header_shape)} has a negative dimension")
    offset = stream.tell()
    count = math.prod(header_shape)
    if len(data) - offset != count * header_dtype.itemsize:
        raise NpyError(
            f".npy data is {len(data) - offset} bytes, {header_dtype} {tuple(header_shape)} "
            f"needs {count * header_dtype.itemsize}"
        )
    flat = np.frombuffer(data, dtype=header_dtype, count=count, offset=offset)
    return flat.reshape(header_shape, order="F" if fortran_order else "C")
