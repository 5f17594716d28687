"""Whether one teacher's hidden units are another's, in whatever order.

A copy of another owner's model whose hidden units were reordered (each layer's output
channels permuted, the next layer's inputs permuted to match) computes exactly what the
original computes, yet its weights, entry by entry, look unrelated to the original's. Its
units still respond to the probes exactly as the original's units do, one for one. So for
two teachers of one spec, each convolution's output channels are correlated over the
probes (and a 4 x 4 grid of positions), matched one to one, and the matched correlations
averaged over units and layers: near 1 for such a copy, lower for a model trained on its
own (at most 0.72 between the honest owners of the glyph and icon main jobs, where copies
with noise of 0.1x each tensor's spread stay at 0.96 or more; ``server/README.md``, "The
checks").
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from free_common.free.teachers import Teacher
from free_common.free.trust.checks import matched_correlation
from free_common.free.trust.probes import teacher_logits

__all__ = ["GRID", "UnitFeatures", "unit_features", "unit_match"]

GRID = 4
"""Each convolution's output is averaged to a GRID x GRID grid of positions."""

UnitFeatures = list[npt.NDArray[np.float64]]
"""Per convolution, in module order: (probes * GRID * GRID, channels), columns standardised."""

_EPS = 1e-6


def unit_features(teacher: Teacher, probes: Tensor) -> UnitFeatures:
    """The responses of every convolution's output channels to ``probes`` (N, C, H, W).

    Each channel's response is its output averaged to a ``GRID x GRID`` grid, over every
    probe and grid cell, centred and scaled to unit variance (a channel that never moves
    gives zeros).
    """
    outputs: list[Tensor] = []

    def keep(_module: nn.Module, _inputs: object, output: Tensor) -> None:
        pooled = F.adaptive_avg_pool2d(output.detach(), GRID)
        outputs.append(pooled.permute(0, 2, 3, 1).reshape(-1, output.shape[1]).double().cpu())

    hooks = [
        m.register_forward_hook(keep) for m in teacher.model.modules() if isinstance(m, nn.Conv2d)
    ]
    try:
        teacher_logits(teacher, probes)
    finally:
        for hook in hooks:
            hook.remove()
    features = []
    for block in _by_layer(outputs, len(hooks)):
        centred = block - block.mean(dim=0, keepdim=True)
        std = centred.std(dim=0, keepdim=True, correction=0)
        features.append(torch.where(std > _EPS, centred / std.clamp_min(_EPS), 0.0).numpy())
    return features


def _by_layer(outputs: list[Tensor], layers: int) -> list[Tensor]:
    """Join the batches of one forward pass layer by layer (hooks fire once per batch)."""
    return [torch.cat(outputs[i::layers]) for i in range(layers)] if layers else []


def unit_match(a: UnitFeatures, b: UnitFeatures) -> float:
    """Mean over layers of the mean correlation of units matched one to one (greedily).

    Args:
        a: :func:`unit_features` of one teacher.
        b: the same of a teacher of the same spec on the same probes.

    Raises:
        ValueError: the layers differ in number or shape (another architecture or probes).
    """
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b, strict=True)):
        raise ValueError("unit features of different architectures or probes")
    if not a:
        return 0.0
    layers = [matched_correlation(x.T @ y / x.shape[0]) for x, y in zip(a, b, strict=True)]
    return float(np.mean(layers))
