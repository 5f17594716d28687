"""CIFAR-style ResNet-10 and ResNet-18 with a width knob (He et al. 2016).

A 3x3 stem (no max-pool), four stages of basic blocks with ``width * (1, 2, 4, 8)`` channels
and strides (1, 2, 2, 2), global average pooling. ResNet-10 has one block per stage, ResNet-18
two. The CPU default width is 16 (a quarter of the usual 64); see ``count_macs``.
"""

from __future__ import annotations

from torch import Tensor, nn

from free_common.models.base import Classifier, batch_norm
from free_common.models.spec import ModelSpec

BLOCKS_PER_STAGE = {"resnet10": (1, 1, 1, 1), "resnet18": (2, 2, 2, 2)}


class BasicBlock(nn.Module):
    """Two conv3x3-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, batch_stats: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = batch_norm(out_channels, batch_stats=batch_stats)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = batch_norm(out_channels, batch_stats=batch_stats)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                batch_norm(out_channels, batch_stats=batch_stats),
            )

    def forward(self, x: Tensor) -> Tensor:
        """(B, in, H, W) -> (B, out, H / stride, W / stride)."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))  # type: ignore[no-any-return]


def build_resnet(spec: ModelSpec, *, batch_stats: bool = False) -> Classifier:
    """ResNet-10 or ResNet-18 (by ``spec.arch``); ``num_features = 8 * width``."""
    w = spec.width
    layers: list[nn.Module] = [
        nn.Conv2d(spec.in_channels, w, 3, 1, 1, bias=False),
        batch_norm(w, batch_stats=batch_stats),
        nn.ReLU(),
    ]
    in_channels = w
    for stage, n_blocks in enumerate(BLOCKS_PER_STAGE[spec.arch]):
        out_channels = w * 2**stage
        for i in range(n_blocks):
            stride = 2 if stage > 0 and i == 0 else 1
            layers.append(BasicBlock(in_channels, out_channels, stride, batch_stats))
            in_channels = out_channels
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
    return Classifier(spec, nn.Sequential(*layers), in_channels)
