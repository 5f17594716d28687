"""Differentiable augmentation and per-teacher input conversion.

FREE augments every generated batch before the teacher and the learner see it: random
crop with padding 4 and horizontal flip (the public code's transforms).
Flip is off by default here (glyphs are not mirror-symmetric). Normalisation is not
done here: every model normalises its own [0, 1] input.

Heterogeneous teachers (paper Sec. 5, multi-architecture/multi-domain) may expect other
input sizes and channel counts than the generator produces: :func:`to_model_input`
resizes bilinearly and converts channels, differentiably.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["convert_channels", "random_crop", "random_flip", "to_model_input", "augment"]


def convert_channels(images: Tensor, channels: int) -> Tensor:
    """(B, C, H, W) -> (B, channels, H, W): grey repeated to RGB, RGB averaged to grey."""
    have = images.shape[1]
    if have == channels:
        return images
    grey = images if have == 1 else images.mean(dim=1, keepdim=True)
    return grey if channels == 1 else grey.expand(-1, channels, -1, -1)


def to_model_input(images: Tensor, size: int, channels: int) -> Tensor:
    """Bilinear resize to (size, size) and channel conversion; identity when they match.

    Args:
        images: float images in [0, 1], shape (B, C, H, W).
        size: the model's input side.
        channels: the model's input channels.

    Returns:
        Images of shape (B, channels, size, size).
    """
    if images.shape[-1] != size or images.shape[-2] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return convert_channels(images, channels)


def random_crop(images: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """Zero-pad by ``padding`` and crop back to (H, W) at a random offset per image.

    Args:
        images: (B, C, H, W).
        padding: pixels of padding on each side (0: identity).
        generator: CPU generator drawing the offsets.

    Returns:
        (B, C, H, W), differentiable w.r.t. ``images``.
    """
    if padding == 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator).to(images.device)
    rows = offsets[0][:, None] + torch.arange(h, device=images.device)  # (B, H)
    cols = offsets[1][:, None] + torch.arange(w, device=images.device)  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    cropped = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B,H,W,C)
    return cropped.permute(0, 3, 1, 2)


def random_flip(images: Tensor, generator: torch.Generator) -> Tensor:
    """Flip each image horizontally with probability 1/2; (B, C, H, W) -> same."""
    mask = torch.rand(images.shape[0], generator=generator) < 0.5
    mask = mask.to(images.device)[:, None, None, None]
    return torch.where(mask, images.flip(-1), images)


def augment(images: Tensor, *, padding: int, flip: bool, generator: torch.Generator) -> Tensor:
    """FREE's differentiable augmentation: random crop (+ optional flip); (B, C, H, W)."""
    images = random_crop(images, padding, generator)
    return random_flip(images, generator) if flip else images
