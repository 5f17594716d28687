"""PyTorch reference ("server side") evaluation of the rule the episode graphs implement.

Written independently of :mod:`free_common.export.episode_graph` so that the two check each
other: BatchNorm uses the fused ``F.batch_norm`` kernel fed with support statistics recorded
by forward hooks, prototype logits use ``torch.cdist``, and the Proto-MAML head takes its
gradients from autograd instead of the closed form.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from free_common.export.episode_graph import HeadConfig
from free_common.models import Classifier

__all__ = ["reference_logits", "support_stats_batchnorm", "support_stats_features"]


@contextmanager
def support_stats_batchnorm(model: nn.Module) -> Iterator[dict[str, bool]]:
    """Make every BatchNorm normalise with statistics recorded while ``phase['record']``.

    Forward the support batch first (statistics recorded), set ``phase["record"] = False``,
    then forward queries: they are normalised with the support statistics. Differentiable,
    so training can use the same rule as the exported graph.
    """
    stats: dict[nn.Module, tuple[Tensor, Tensor]] = {}
    phase = {"record": True}

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], _output: Tensor) -> Tensor:
        assert isinstance(module, nn.modules.batchnorm._BatchNorm)
        x = inputs[0]
        if phase["record"]:
            stats[module] = (x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False))
        mean, var = stats[module]
        if not mean.requires_grad:  # evaluation: the fused kernel
            return F.batch_norm(x, mean, var, module.weight, module.bias, False, 0.0, module.eps)
        shape = (1, -1, 1, 1)  # training: the kernel refuses gradients through statistics
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + module.eps)
        if module.affine:
            y = y * module.weight.view(shape) + module.bias.view(shape)
        return y

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        yield phase
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def support_stats_features(
    model: Classifier, support: Tensor, query: Tensor
) -> tuple[Tensor, Tensor]:
    """Features with BatchNorm statistics taken from the support set only.

    Args:
        model: classifier with ``forward_features``; not modified.
        support: (S, C, H, W) pixels in [0, 1].
        query: (Q, C, H, W) pixels in [0, 1].

    Returns:
        Support features (S, D) and query features (Q, D).
    """
    with support_stats_batchnorm(model) as phase:
        support_f = model.forward_features(support)
        phase["record"] = False
        query_f = model.forward_features(query)
    return support_f, query_f


def _proto_maml_logits(
    support_f: Tensor, labels: Tensor, query_f: Tensor, n_way: int, head: HeadConfig, scale: float
) -> Tensor:
    """Proto-MAML head on features scaled by sqrt(scale), gradients from autograd."""
    root = math.sqrt(scale)
    support_f, query_f = support_f * root, query_f * root
    onehot = F.one_hot(labels, n_way).to(support_f.dtype)
    protos = (onehot.T @ support_f) / onehot.sum(0).clamp_min(1.0).unsqueeze(1)
    weight = (2.0 * protos).requires_grad_(True)
    bias = (-(protos * protos).sum(1)).requires_grad_(True)
    for _ in range(head.steps):
        with torch.enable_grad():
            loss = F.cross_entropy(support_f @ weight.T + bias, labels)
            grad_w, grad_b = torch.autograd.grad(loss, (weight, bias))
        weight = (weight - head.lr * grad_w).detach().requires_grad_(True)
        bias = (bias - head.lr * grad_b).detach().requires_grad_(True)
    return (query_f @ weight.T + bias).detach()


def reference_logits(
    model: Classifier,
    support: Tensor,
    support_labels: Tensor,
    query: Tensor,
    n_way: int,
    head: HeadConfig,
) -> Tensor:
    """Query logits (Q, N) of the adaptation rule ``head``, computed the PyTorch way.

    Args:
        model: classifier with ``forward_features`` and ``num_features``.
        support: (S, C, H, W) pixels in [0, 1].
        support_labels: (S,) int64 in 0..n_way-1.
        query: (Q, C, H, W) pixels in [0, 1].
        n_way: number of classes N.
        head: the head rule (prototype or Proto-MAML) and its settings.
    """
    scale = head.resolved_scale(model.num_features)
    support_f, query_f = support_stats_features(model, support, query)
    if head.kind == "protomaml":
        return _proto_maml_logits(support_f, support_labels, query_f, n_way, head, scale)
    onehot = F.one_hot(support_labels, n_way).to(support_f.dtype)
    protos = (onehot.T @ support_f) / onehot.sum(0).clamp_min(1.0).unsqueeze(1)
    return -scale * torch.cdist(query_f, protos).pow(2)
