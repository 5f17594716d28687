"""Build the int8 variant and ship it only if it stays within 1 accuracy point of fp32.

Calibration uses meta-train episodes and the gate uses meta-val episodes (never meta-test),
both at the model's own image size and channels, run through ONNX Runtime exactly as on a
device.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from free_common.data.episodes import Episode, EpisodeSampler
from free_common.data.registry import load_split
from free_common.export.quantize import Feeds, quantize_conv_int8
from free_common.models import ModelSpec

__all__ = ["INT8_MAX_DROP", "Int8Decision", "decide_int8", "episode_feeds"]

logger = logging.getLogger(__name__)

INT8_MAX_DROP = 0.01


@dataclass(frozen=True)
class Int8Decision:
    """Outcome of the int8 gate (accuracies on meta-val episodes)."""

    onnx: bytes
    fp32_accuracy: float
    int8_accuracy: float
    episodes: int

    @property
    def ship(self) -> bool:
        """True when int8 loses at most :data:`INT8_MAX_DROP` accuracy."""
        return self.fp32_accuracy - self.int8_accuracy <= INT8_MAX_DROP


def episode_feeds(ep: Episode) -> Feeds:
    """Graph inputs for one episode (one-hot labels)."""
    n_way = ep.n_way
    onehot = np.eye(n_way, dtype=np.float32)[ep.support_labels.numpy()]
    return {
        "support": ep.support_images.numpy().astype(np.float32),
        "support_onehot": onehot,
        "query": ep.query_images.numpy().astype(np.float32),
    }


def _accuracy(onnx_bytes: bytes, episodes: Iterable[Episode]) -> float:
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
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
    seed: int = 0,
) -> Int8Decision:
    """Quantise ``fp32_onnx`` (Conv only) and measure it against fp32 on meta-val.

    Args:
        fp32_onnx: a ``proto`` episode graph.
        spec: its backbone spec (image size and channels of the episodes).
        dataset: registered dataset with ``train`` and ``val`` splits.
        calibration_episodes: 5-way 5-shot meta-train episodes for MinMax calibration.
        gate_episodes: 5-way 5-shot meta-val episodes for the accuracy gate.
        seed: episode sampling seed.
    """
    size, channels = spec.image_size, spec.in_channels
    train = load_split(dataset, "train", image_size=size, channels=channels)
    val = load_split(dataset, "val", image_size=size, channels=channels)
    sampler = EpisodeSampler(train, 5, 5, 15, seed)
    calibration = [episode_feeds(ep) for ep in sampler.episodes(calibration_episodes)]
    int8 = quantize_conv_int8(fp32_onnx, calibration, "proto-int8")
    gate = list(EpisodeSampler(val, 5, 5, 15, seed + 1).episodes(gate_episodes))
    decision = Int8Decision(int8, _accuracy(fp32_onnx, gate), _accuracy(int8, gate), len(gate))
    logger.info(
        "int8 gate on %d meta-val episodes: fp32 %.2f%%, int8 %.2f%% -> %s",
        decision.episodes,
        100 * decision.fp32_accuracy,
        100 * decision.int8_accuracy,
        "ship" if decision.ship else "do not ship",
    )
    return decision
