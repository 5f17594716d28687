"""Conv4: four conv3x3-BN-ReLU-maxpool blocks (Vinyals et al. 2016; FREE supplement §A)."""

from __future__ import annotations

from torch import nn

from free_common.models.base import Classifier, batch_norm
from free_common.models.spec import ModelSpec


def conv_block(in_channels: int, out_channels: int, *, batch_stats: bool) -> nn.Sequential:
    """Conv3x3 (padding 1) -> BN -> ReLU -> 2x2 max-pool; halves H and W."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        batch_norm(out_channels, batch_stats=batch_stats),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


def build_conv4(spec: ModelSpec, *, batch_stats: bool = False) -> Classifier:
    """Conv4 with ``spec.width`` filters per block; features are the flattened last map.

    For a 32x32 input the last map is (width, 2, 2), so ``num_features = 4 * width``.
    """
    if spec.image_size < 16:
        raise ValueError(f"conv4 needs image_size >= 16 (four 2x2 pools), got {spec.image_size}")
    channels = [spec.in_channels] + [spec.width] * 4
    blocks = [
        conv_block(a, b, batch_stats=batch_stats)
        for a, b in zip(channels, channels[1:], strict=False)
    ]
    side = spec.image_size // 16
    backbone = nn.Sequential(*blocks, nn.Flatten(1))
    return Classifier(spec, backbone, spec.width * side * side)
