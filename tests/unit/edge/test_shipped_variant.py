"""The shipped edge variant: the fastest one within 1 point of fp32 on meta-val."""

from __future__ import annotations

import pytest

from free_common.export.int8_release import (
    INT8_MAX_DROP,
    Int8Decision,
    VariantMeasure,
    shipped_variant,
)

FP32 = VariantMeasure("proto", val_accuracy=0.80, latency_ms=7.5)


@pytest.mark.parametrize(
    ("int8_accuracy", "int8_ms", "expected"),
    [
        (0.80, 17.5, "proto"),  # as accurate but slower (this CPU): fp32 ships
        (0.80, 4.0, "proto-int8"),  # as accurate and faster: int8 ships
        (0.795, 4.0, "proto-int8"),  # half a point lower, faster: within the tolerance
        (0.78, 4.0, "proto"),  # two points lower: never ships, however fast
        (0.85, 7.5, "proto"),  # more accurate but not faster: the tie keeps fp32
    ],
)
def test_fastest_within_one_point_of_fp32(
    int8_accuracy: float, int8_ms: float, expected: str
) -> None:
    int8 = VariantMeasure("proto-int8", int8_accuracy, int8_ms)
    assert shipped_variant(FP32, [int8]).name == expected


def test_fp32_ships_when_it_is_the_only_candidate() -> None:
    assert shipped_variant(FP32, []) is FP32


def test_decision_ships_int8_only_when_faster_and_within_tolerance() -> None:
    slow = Int8Decision(b"", 0.80, 0.80, 10, fp32_latency_ms=7.5, int8_latency_ms=17.5)
    fast = Int8Decision(b"", 0.80, 0.80 - INT8_MAX_DROP / 2, 10, 7.5, 4.0)
    lossy = Int8Decision(b"", 0.80, 0.80 - 2 * INT8_MAX_DROP, 10, 7.5, 4.0)
    assert (slow.shipped, slow.within_tolerance, slow.ship) == ("proto", True, False)
    assert (fast.shipped, fast.ship) == ("proto-int8", True)
    assert (lossy.shipped, lossy.within_tolerance) == ("proto", False)
