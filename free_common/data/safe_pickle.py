"""Load the CIFAR python pickles without executing code from the file.

A pickle may name any importable callable and call it while loading. The unpickler below
refuses every global except the handful that a pickled dict of numeric numpy arrays needs,
and even those are replaced by inert stand-ins defined here: numpy's own reconstruction
functions are never called. The stand-ins accept only plain numeric dtypes (no object
arrays, whose payload is itself a pickle), check that the byte count matches the shape and
build the array with :func:`numpy.frombuffer`. Builtin containers (dict, list, tuple, str,
bytes, int, float, bool, None) need no global and load as usual.
"""

from __future__ import annotations

import io
import math
import pickle
from typing import Any

import numpy as np
import numpy.typing as npt

_NUMERIC_CODES = frozenset({"b1", "u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f2", "f4", "f8"})
_BYTE_ORDERS = frozenset({"<", ">", "|", "="})


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global (a callable) that is not allowed, or malformed array data."""


def _text(value: object) -> str:
    """Pickles from Python 2 carry ``str`` as bytes when loaded with ``encoding="bytes"``."""
    if isinstance(value, bytes):
        return value.decode("ascii", errors="replace")
    if isinstance(value, str):
        return value
    raise UnsafePickleError(f"expected a string in array metadata, got {type(value).__name__}")


class _NDArrayTag:
    """Stands for ``numpy.ndarray`` as the first argument of ``_reconstruct``."""


class _DTypeStub:
    """Stands for ``numpy.dtype(code, align, copy)``; only plain numeric codes are accepted."""

    def __init__(self, code: object, *_args: object) -> None:
        text = _text(code)
        if text.lstrip("<>|=") not in _NUMERIC_CODES:
            raise UnsafePickleError(f"refused array dtype {text!r}: only numeric dtypes load")
        self.code = text.lstrip("<>|=")
        self.order = text[0] if text[0] in _BYTE_ORDERS else "|"

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        if not isinstance(state, tuple) or len(state) < 2:
            raise UnsafePickleError("malformed numpy dtype state")
        order = _text(state[1])
        if order not in _BYTE_ORDERS:
            raise UnsafePickleError(f"malformed numpy byte order {order!r}")
        self.order = order

    def to_numpy(self) -> np.dtype[Any]:
        """The dtype this stands for."""
        return np.dtype(("" if self.order == "|" else self.order) + self.code)


class _ArrayStub:
    """Stands for an ndarray under construction; :meth:`to_numpy` returns the real array."""

    def __init__(self) -> None:
        self.array: npt.NDArray[Any] | None = None

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise UnsafePickleError("malformed numpy array state")
        shape, dtype, fortran, raw = state[-4:]
        self.array = _array_from_bytes(raw, dtype, shape, bool(fortran))

    def to_numpy(self) -> npt.NDArray[Any]:
        """The array this stands for."""
        if self.array is None:
            raise UnsafePickleError("numpy array without data")
        return self.array


def _array_from_bytes(raw: object, dtype: object, shape: object, fortran: bool) -> npt.NDArray[Any]:
    if not isinstance(dtype, _DTypeStub):
        raise UnsafePickleError("numpy array with a dtype that is not a plain numpy dtype")
    if not isinstance(raw, (bytes, bytearray)):
        raise UnsafePickleError(f"numpy array payload must be bytes, got {type(raw).__name__}")
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise UnsafePickleError(f"malformed numpy array shape {shape!r}")
    real = dtype.to_numpy()
    if len(raw) != math.prod(shape) * real.itemsize:
        raise UnsafePickleError(
            f"numpy array of shape {shape} and dtype {real} needs "
            f"{math.prod(shape) * real.itemsize} bytes, the pickle holds {len(raw)}"
        )
    flat: npt.NDArray[Any] = np.frombuffer(raw, dtype=real)
    return flat.reshape(shape, order="F") if fortran else flat.reshape(shape, order="C")


def _reconstruct(cls: object, _shape: object, _typecode: object) -> _ArrayStub:
    if cls is not _NDArrayTag:
        raise UnsafePickleError("numpy _reconstruct called on something other than ndarray")
    return _ArrayStub()


def _frombuffer(raw: object, dtype: object, shape: object, order: object) -> _ArrayStub:
    stub = _ArrayStub()
    stub.array = _array_from_bytes(raw, dtype, shape, _text(order) == "F")
    return stub


def _encode(text: object, encoding: object = "utf-8") -> bytes:
    """Stands for ``_codecs.encode``: how protocol-2 pickles from Python 3 store bytes."""
    if not isinstance(text, str) or _text(encoding).lower() not in ("latin1", "latin-1"):
        raise UnsafePickleError("refused _codecs.encode with unexpected arguments")
    return text.encode("latin-1")


def _empty_bytes(*args: object) -> bytes:
    """Stands for ``bytes()``: how protocol-2 pickles from Python 3 store ``b""``."""
    if args:
        raise UnsafePickleError("refused bytes() with arguments")
    return b""


_ALLOWED: dict[tuple[str, str], object] = {
    ("numpy", "ndarray"): _NDArrayTag,
    ("numpy", "dtype"): _DTypeStub,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _encode,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused global {module}.{name}: not a plain data pickle"
            ) from None


def _realise(value: object) -> object:
    """Replace stand-ins by real arrays inside (nested) dicts, lists and tuples."""
    if isinstance(value, _ArrayStub):
        return value.to_numpy()
    if isinstance(value, (_DTypeStub, _NDArrayTag)):
        raise UnsafePickleError("stray numpy metadata object in the pickle")
    if isinstance(value, dict):
        return {key: _realise(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_realise(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_realise(item) for item in value)
    return value


def safe_loads(data: bytes) -> object:
    """Unpickle plain data (builtins and numeric numpy arrays) without running file code.

    Strings written by Python 2 come back as ``bytes`` (``encoding="bytes"``), as the CIFAR
    files expect.

    Raises:
        UnsafePickleError: a refused global or malformed array data.
        pickle.UnpicklingError, EOFError: a truncated or corrupt pickle.
    """
    unpickler = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes")
    unpickler.persistent_load = _refuse_persistent  # type: ignore[assignment]
    return _realise(unpickler.load())


def _refuse_persistent(pid: object) -> object:
    raise UnsafePickleError(f"refused persistent id {pid!r}")
