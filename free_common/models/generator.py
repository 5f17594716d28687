"""The meta-generator of FREE (Wei et al., CVPR 2024, supplement Table 1).

FC(z) -> reshape (2nf, s/4, s/4) -> BN -> upsample x2 -> conv3x3(2nf, 2nf) -> BN -> LeakyReLU(0.2)
-> upsample x2 -> conv3x3(2nf, nf) -> BN -> LeakyReLU(0.2) -> conv3x3(nf, nc) -> sigmoid.
For image sizes not divisible by 4 the output is resized to the exact size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class GeneratorSpec:
    """Shape of a meta-generator.

    Attributes:
        latent_dim: size of the Gaussian latent z (256 in the paper).
        width: number of convolution filters nf (64 in the paper).
        out_channels: channels nc of the generated images.
        image_size: side of the generated square images.
    """

    latent_dim: int = 256
    width: int = 64
    out_channels: int = 1
    image_size: int = 32

    def __post_init__(self) -> None:
        """Reject sizes the architecture cannot produce."""
        for name in ("latent_dim", "width", "out_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"generator {name} must be >= 1, got {getattr(self, name)}")
        if self.image_size < 8:
            raise ValueError(f"generator image_size must be >= 8, got {self.image_size}")


class MetaGenerator(nn.Module):
    """Maps latents (B, latent_dim) to images (B, out_channels, size, size) in [0, 1]."""

    def __init__(self, spec: GeneratorSpec) -> None:
        super().__init__()
        self.spec = spec
        nf, self.init_side = spec.width, max(spec.image_size // 4, 1)
        self.fc = nn.Linear(spec.latent_dim, 2 * nf * self.init_side**2)
        self.bn0 = nn.BatchNorm2d(2 * nf)
        self.conv1 = nn.Conv2d(2 * nf, 2 * nf, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(2 * nf)
        self.conv2 = nn.Conv2d(2 * nf, nf, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(nf)
        self.conv3 = nn.Conv2d(nf, spec.out_channels, 3, 1, 1)

    def forward(self, z: Tensor) -> Tensor:
        """Images (B, C, S, S) in [0, 1] for latents z (B, latent_dim)."""
        s = self.init_side
        x: Tensor = self.bn0(self.fc(z).view(z.shape[0], -1, s, s))
        x = F.leaky_relu(self.bn1(self.conv1(F.interpolate(x, scale_factor=2.0))), 0.2)
        x = F.leaky_relu(self.bn2(self.conv2(F.interpolate(x, scale_factor=2.0))), 0.2)
        x = self.conv3(x)
        if x.shape[-1] != self.spec.image_size:
            size = (self.spec.image_size, self.spec.image_size)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x.sigmoid()


def build_generator(spec: GeneratorSpec) -> MetaGenerator:
    """A freshly initialised meta-generator."""
    return MetaGenerator(spec)
