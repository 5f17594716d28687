"""Registry: build any classifier from its :class:`ModelSpec`; count its cost."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from free_common.models.base import Classifier
from free_common.models.conv4 import build_conv4
from free_common.models.resnet import build_resnet
from free_common.models.spec import ModelSpec

Builder = Callable[..., Classifier]

MODEL_BUILDERS: dict[str, Builder] = {
    "conv4": build_conv4,
    "resnet10": build_resnet,
    "resnet18": build_resnet,
}


def build_model(spec: ModelSpec, *, batch_stats: bool = False) -> Classifier:
    """A freshly initialised classifier for ``spec``.

    Args:
        spec: architecture, input and head description.
        batch_stats: BatchNorm always uses batch statistics (no running buffers), the MAML
            convention of the meta-learner; otherwise ordinary BatchNorm (teachers).
    """
    return MODEL_BUILDERS[spec.arch](spec, batch_stats=batch_stats)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: Classifier) -> int:
    """Multiply-accumulates of one forward pass on one image (conv and linear layers)."""
    macs = 0

    def on_conv(mod: nn.Module, _: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs
        assert isinstance(mod, nn.Conv2d)
        per_output = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        macs += out.numel() * per_output

    def on_linear(mod: nn.Module, _: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs
        assert isinstance(mod, nn.Linear)
        macs += out.numel() * mod.in_features

    hooks = [
        m.register_forward_hook(on_conv if isinstance(m, nn.Conv2d) else on_linear)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    spec = model.spec
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(2, spec.in_channels, spec.image_size, spec.image_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return macs // 2
