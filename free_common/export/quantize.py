"""Optional int8 variant: static QDQ quantisation of the Conv layers only.

Only ``Conv`` is quantised (per-channel int8 weights, int8 activations, MinMax calibration),
so BatchNorm statistics, prototypes and distances stay float. Whether the variant ships is
decided by measurement (``scripts/bench/edge.py``: within 1 accuracy point of fp32).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from free_common.export.onnx_export import ExportError, strip_debug_info

__all__ = ["quantize_conv_int8"]

logger = logging.getLogger(__name__)

Feeds = dict[str, npt.NDArray[np.float32]]


class _Reader(CalibrationDataReader):  # type: ignore[misc]
    """Feeds calibration episodes (same shapes each: MinMax only, see the ONNX note)."""

    def __init__(self, feeds: Iterable[Feeds]) -> None:
        self._iter: Iterator[Feeds] = iter(feeds)

    def get_next(self) -> Feeds | None:
        return next(self._iter, None)


def quantize_conv_int8(onnx_bytes: bytes, calibration: Iterable[Feeds], variant: str) -> bytes:
    """Static QDQ int8 quantisation of every Conv of an episode graph.

    Args:
        onnx_bytes: the fp32 episode graph.
        calibration: input feeds (``support``, ``support_onehot``, ``query``) from
            meta-train episodes (never meta-test).
        variant: the new ``free.variant`` metadata value, e.g. ``"proto-int8"``.

    Returns:
        The quantised model, checked with ``full_check=True``.
    """
    model = onnx.load_from_string(onnx_bytes)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "int8.onnx"
        quantize_static(
            model,
            out,
            _Reader(calibration),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        quantised = onnx.load(out)
    strip_debug_info(quantised)
    props = {p.key: p.value for p in quantised.metadata_props}
    props.update({"free.variant": variant, "free.quantization": "int8-qdq-conv-per-channel"})
    del quantised.metadata_props[:]
    onnx.helper.set_model_props(quantised, props)
    data = quantised.SerializeToString()
    try:
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    except onnx.checker.ValidationError as err:
        raise ExportError(f"quantised model fails the ONNX checker: {err}") from err
    logger.info("int8 QDQ model: %d bytes (fp32 %d)", len(data), len(onnx_bytes))
    return data
