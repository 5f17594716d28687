"""Build the int8 variant and choose the shipped one: the fastest within 1 point of fp32.

The shipped variant of the ``proto`` graph is the fastest of {fp32, int8} whose meta-val
accuracy is at most :data:`INT8_MAX_DROP` below fp32's, latency measured on the machine that
exports (one 5-way 5-shot episode with 75 queries, ONNX Runtime with the edge's session
options). On x86 CPUs without fast int8 kernels the QDQ graph is slower than fp32, so fp32
ships; int8 stays available (``python -m free_common.export --int8 DATASET --keep-int8``) and
benchmarked (``python -m scripts.bench.edge``).

Calibration uses meta-train episodes and the gate uses meta-val episodes (never meta-test),
both at the model's own image size and channels, run through ONNX Runtime exactly as on a
device.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from free_common.data.episodes import Episode, EpisodeSampler
from free_common.data.registry import load_split
from free_common.export.quantize import Feeds, quantize_conv_int8
from free_common.models import ModelSpec

__all__ = [
    "INT8_MAX_DROP",
    "Int8Decision",
    "VariantMeasure",
    "decide_int8",
    "edge_session",
    "episode_feeds",
    "episode_latency_ms",
    "shipped_variant",
]

logger = logging.getLogger(__name__)

INT8_MAX_DROP = 0.01


@dataclass(frozen=True)
class VariantMeasure:
    """One candidate graph: meta-val accuracy and p50 latency on the exporting machine."""

    name: str
    val_accuracy: float
    latency_ms: float


def shipped_variant(
    fp32: VariantMeasure, others: Sequence[VariantMeasure], max_drop: float = INT8_MAX_DROP
) -> VariantMeasure:
    """The fastest of ``fp32`` and those ``others`` at most ``max_drop`` below fp32's accuracy.

    ``fp32`` is always eligible, so a variant that is less accurate or slower never ships;
    ties in latency keep the earlier candidate (fp32 first).
    """
    eligible = [fp32] + [m for m in others if fp32.val_accuracy - m.val_accuracy <= max_drop]
    return min(eligible, key=lambda m: m.latency_ms)


@dataclass(frozen=True)
class Int8Decision:
    """Outcome of the int8 gate (accuracies on meta-val episodes, latencies on this machine)."""

    onnx: bytes
    fp32_accuracy: float
    int8_accuracy: float
    episodes: int
    fp32_latency_ms: float
    int8_latency_ms: float

    @property
    def within_tolerance(self) -> bool:
        """True when int8 loses at most :data:`INT8_MAX_DROP` accuracy."""
        return self.fp32_accuracy - self.int8_accuracy <= INT8_MAX_DROP

    @property
    def shipped(self) -> str:
        """``"proto"`` (fp32) or ``"proto-int8"``: :func:`shipped_variant` of the two."""
        return shipped_variant(
            VariantMeasure("proto", self.fp32_accuracy, self.fp32_latency_ms),
            [VariantMeasure("proto-int8", self.int8_accuracy, self.int8_latency_ms)],
        ).name

    @property
    def ship(self) -> bool:
        """True when int8 is the shipped variant (within 1 point and faster than fp32)."""
        return self.shipped == "proto-int8"


def episode_feeds(ep: Episode) -> Feeds:
    """Graph inputs for one episode (one-hot labels)."""
    n_way = ep.n_way
    onehot = np.eye(n_way, dtype=np.float32)[ep.support_labels.numpy()]
    return {
        "support": ep.support_images.numpy().astype(np.float32),
        "support_onehot": onehot,
        "query": ep.query_images.numpy().astype(np.float32),
    }


def edge_session(onnx_bytes: bytes, threads: int = 2) -> ort.InferenceSession:
    """An ONNX Runtime session with the edge runtime's options (threads, no spinning)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def episode_latency_ms(
    onnx_bytes: bytes, feeds: Feeds, *, runs: int = 50, warmup: int = 10, threads: int = 2
) -> float:
    """Median wall milliseconds of one episode call on this machine, after ``warmup`` calls."""
    session = edge_session(onnx_bytes, threads)
    for _ in range(warmup):
        session.run(None, feeds)
    wall = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        wall.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(wall)


def _accuracy(onnx_bytes: bytes, episodes: Iterable[Episode]) -> float:
    session = edge_session(onnx_bytes)
    accs = [
        float((session.run(None, episode_feeds(ep))[0].argmax(1) == ep.query_labels.numpy()).mean())
        for ep in episodes
    ]
    return float(np.mean(accs))


def decide_int8(
    fp32_onnx: bytes,
    spec: ModelSpec,
    dataset: str = "glyphs",
    *,
    calibration_episodes: int = 32,
    gate_episodes: int = 100,
    latency_runs: int = 50,
    seed: int = 0,
) -> Int8Decision:
    """Quantise ``fp32_onnx`` (Conv only) and measure it against fp32 on meta-val and here.

    Args:
        fp32_onnx: a ``proto`` episode graph.
        spec: its backbone spec (image size and channels of the episodes).
        dataset: registered dataset with ``train`` and ``val`` splits.
        calibration_episodes: 5-way 5-shot meta-train episodes for MinMax calibration.
        gate_episodes: 5-way 5-shot meta-val episodes for the accuracy gate.
        latency_runs: timed calls per variant on one 5-way 5-shot, 75-query meta-val episode.
        seed: episode sampling seed.
    """
    size, channels = spec.image_size, spec.in_channels
    train = load_split(dataset, "train", image_size=size, channels=channels)
    val = load_split(dataset, "val", image_size=size, channels=channels)
    sampler = EpisodeSampler(train, 5, 5, 15, seed)
    calibration = [episode_feeds(ep) for ep in sampler.episodes(calibration_episodes)]
    int8 = quantize_conv_int8(fp32_onnx, calibration, "proto-int8")
    gate = list(EpisodeSampler(val, 5, 5, 15, seed + 1).episodes(gate_episodes))
    timed = episode_feeds(gate[0])
    decision = Int8Decision(
        int8,
        _accuracy(fp32_onnx, gate),
        _accuracy(int8, gate),
        len(gate),
        episode_latency_ms(fp32_onnx, timed, runs=latency_runs),
        episode_latency_ms(int8, timed, runs=latency_runs),
    )
    logger.info(
        "int8 gate on %d meta-val episodes: fp32 %.2f%% %.2f ms, int8 %.2f%% %.2f ms -> ship %s",
        decision.episodes,
        100 * decision.fp32_accuracy,
        decision.fp32_latency_ms,
        100 * decision.int8_accuracy,
        decision.int8_latency_ms,
        decision.shipped,
    )
    return decision
