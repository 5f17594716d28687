"""The classifier interface every model in the registry implements."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from free_common.models.spec import ModelSpec


def batch_norm(channels: int, *, batch_stats: bool) -> nn.BatchNorm2d:
    """BatchNorm2d; with ``batch_stats`` it never tracks running statistics (MAML convention)."""
    return nn.BatchNorm2d(channels, track_running_stats=not batch_stats)


class Classifier(nn.Module):
    """A backbone, a linear head and the input normalisation of its spec.

    Inputs are float pixels in [0, 1] of shape (B, C, H, W); the model normalises them itself
    with ``spec.mean``/``spec.std`` (non-persistent buffers, so they never travel in weights).

    Args:
        spec: the spec the model was built from.
        backbone: maps normalised images (B, C, H, W) to features (B, num_features).
        num_features: width of the feature vector.
    """

    def __init__(self, spec: ModelSpec, backbone: nn.Module, num_features: int) -> None:
        super().__init__()
        self.spec = spec
        self.num_features = num_features
        shape = (1, spec.in_channels, 1, 1)
        self.pixel_mean: Tensor
        self.pixel_std: Tensor
        self.register_buffer("pixel_mean", torch.tensor(spec.mean).view(shape), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(spec.std).view(shape), persistent=False)
        self.backbone = backbone
        self.head = nn.Linear(num_features, spec.num_classes)

    @property
    def num_classes(self) -> int:
        """Outputs of the head."""
        return self.head.out_features

    def forward_features(self, images: Tensor) -> Tensor:
        """Features of shape (B, num_features) for images (B, C, H, W) in [0, 1]."""
        return self.backbone((images - self.pixel_mean) / self.pixel_std)  # type: ignore[no-any-return]

    def forward_head(self, features: Tensor) -> Tensor:
        """Logits (B, num_classes) from features (B, num_features)."""
        return self.head(features)  # type: ignore[no-any-return]

    def forward(self, images: Tensor) -> Tensor:
        """Logits (B, num_classes) for images (B, C, H, W) in [0, 1]."""
        return self.forward_head(self.forward_features(images))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head by a freshly initialised one with ``num_classes`` outputs."""
        device = self.head.weight.device
        self.head = nn.Linear(self.num_features, num_classes).to(device)
        self.spec = replace(self.spec, num_classes=num_classes)
