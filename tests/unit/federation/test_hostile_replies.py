"""Hostile replies are refused by cheap checks first: fast, and without building what they claim.

Each case is timed (wall clock; the bound is the goal, 0.5 s, while the fix takes about a
millisecond, so a loaded machine still passes) and its Python allocations measured with
``tracemalloc`` (bound 64 MiB beyond the payload itself, which exists before measuring).
"""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from free_common.submission import Submission
from server.pool import ModelPool, headline
from server.round import Reply, process_round
from server.server_app import unpack_submission
from server.validation import Limits, Validator

from .helpers import make_submission

SECONDS = 0.5
EXTRA_BYTES = 64 * 2**20
MAX_BYTES = 64 * 2**20
BASE = make_submission()


def _measure(fn: Callable[[], Any]) -> tuple[Any, float, int]:
    """(result, wall seconds, peak bytes allocated while running ``fn``)."""
    started = time.perf_counter()
    fn()
    seconds = time.perf_counter() - started
    tracemalloc.start()
    try:
        result = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, seconds, peak


def zip_central_directory(size: int) -> bytes:
    """``size`` bytes that numpy reads as a zip archive whose central directory fills them."""
    entry = b"PK\x01\x02" + struct.pack("<HHHHHHIIIHHHHHII", 20, 20, *[0] * 7, 1, *[0] * 6) + b"a"
    head = b"PK\x03\x04" + b"\x00" * 26
    directory = entry * ((size - len(head) - 22) // len(entry))
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 0xFFFF, 0xFFFF, len(directory), 30, 0)
    return head + directory + end


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _content(weights: ArrayRecord, card: bytes = BASE.card) -> RecordDict:
    return RecordDict(
        {"weights": weights, "submission": ConfigRecord({"card": card, "signature": b"s" * 64})}
    )


def _many_arrays(count: int) -> ArrayRecord:
    """An ArrayRecord of ``count`` one-element arrays, as Flower hands a reply's records over.

    Filled behind Flower's per-item checks: building it item by item takes Flower about 14 s
    for 480,000 arrays, a cost paid before the server sees the reply.
    """
    one = Array(dtype="float32", shape=(1,), stype="numpy.ndarray", data=_npy(np.zeros(1, "f4")))
    record = ArrayRecord(array_dict={"t0": one})
    record.__dict__["_data"].update({f"t{i}": one for i in range(count)})
    assert len(record) == count
    return record


@pytest.fixture(scope="module")
def zip_flood() -> RecordDict:
    flood = zip_central_directory(60 * 2**20)
    array = Array(dtype="float32", shape=(16,), stype="numpy.ndarray", data=flood)
    return _content(ArrayRecord(array_dict={"conv.weight": array}))


def test_zip_central_directory_payload_is_refused_cheaply(zip_flood: RecordDict) -> None:
    refusal, seconds, peak = _measure(lambda: unpack_submission(zip_flood, MAX_BYTES))
    assert isinstance(refusal, str) and ".npy" in refusal, refusal
    assert seconds < SECONDS and peak < EXTRA_BYTES, (seconds, peak)


def test_many_arrays_are_refused_before_any_is_parsed() -> None:
    content = _content(_many_arrays(480_000))
    refusal, seconds, peak = _measure(lambda: unpack_submission(content, MAX_BYTES))
    assert refusal == "480000 arrays, limit 1024", refusal
    assert seconds < SECONDS and peak < EXTRA_BYTES, (seconds, peak)


def test_many_arrays_through_the_python_api_are_refused_cheaply(tmp_path: Path) -> None:
    tensors = {f"t{i}": np.zeros(1, np.float32) for i in range(480_000)}
    reply = Reply("m", submission=Submission(BASE.card, tensors, BASE.signature))
    with ModelPool(tmp_path) as pool:

        def run() -> str:
            outcome = process_round(1, {"m": 7}, [reply], validator=Validator(), pool=pool)
            return outcome.rejected[7]

        reason, seconds, peak = _measure(run)
        assert reason == "size"
        assert seconds < SECONDS and peak < EXTRA_BYTES, (seconds, peak)
        assert pool.rejections()[-1].detail == "480000 tensors, limit 1024"


@pytest.mark.parametrize(
    "reason",
    [
        "ValueError" * 20_000,
        "Error" * 40_000,
        "a" * 200_000,
        "x." * 100_000 + "Error: boom",
        ("Traceback (most recent call last):\n" + "  File 'x', line 1\n" * 5000) * 2,
    ],
    ids=["error-words", "bare-error", "one-word", "dotted", "lines"],
)
def test_headline_of_a_200kb_reason_is_cheap(reason: str) -> None:
    line, seconds, peak = _measure(lambda: headline(reason))
    assert len(line) <= 300
    assert seconds < SECONDS and peak < EXTRA_BYTES, (seconds, peak)


def test_headline_still_finds_the_exception_line() -> None:
    text = "Traceback (most recent call last):\n  File 'a.py'\nflwr.x.ClientAppError: boom\n"
    assert headline(text) == "flwr.x.ClientAppError: boom"
    assert headline("noise\n" * 10 + "ValueError: bad value") == "ValueError: bad value"
    assert headline("Error: not an exception name\nlast line") == "last line"
    assert headline("x" * 60_000 + "\nKeyError: 'k'") == "KeyError: 'k'"  # within 64 KiB


def test_round_with_three_hostile_nodes_stays_cheap(zip_flood: RecordDict, tmp_path: Path) -> None:
    """Three zip floods and a huge error reason in one round: all refused, each cheaply."""
    many = _content(_many_arrays(200_000))
    with ModelPool(tmp_path) as pool:

        def run() -> dict[int, str]:
            replies = [Reply(f"m{i}", unpack_error=str(unpack_submission(zip_flood, MAX_BYTES)))
                       for i in range(3)]  # fmt: skip
            replies.append(Reply("m3", unpack_error=str(unpack_submission(many, MAX_BYTES))))
            replies.append(Reply("m4", error=(2, "ValueError" * 20_000)))
            sent = {f"m{i}": 10 + i for i in range(5)}
            outcome = process_round(1, sent, replies, validator=Validator(Limits()), pool=pool)
            return {**outcome.rejected, **outcome.failed}

        verdicts, seconds, peak = _measure(run)
        assert verdicts == {10: "malformed", 11: "malformed", 12: "malformed", 13: "malformed",
                            14: "client-raised"}  # fmt: skip
        assert seconds < 5 * SECONDS and peak < EXTRA_BYTES, (seconds, peak)
