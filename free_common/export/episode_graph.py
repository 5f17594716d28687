"""Self-contained few-shot episode graphs: (support, one-hot labels, query) -> query logits.

BatchNorm semantics (chosen on purpose): every BatchNorm layer normalises with per-channel
statistics of the SUPPORT activations at that layer (biased variance, the layer's eps), and
applies them to support and query alike. The meta-learner is trained with batch statistics,
so running statistics would be wrong; statistics over support + query (transductive) would
make a query's logits depend on the other queries. With support statistics each query is
classified independently of the rest of the query batch. The statistics are written as
explicit reductions because the dynamo exporter silently exports ``nn.BatchNorm2d`` in eval
mode.

References: prototypes and squared-Euclidean logits (Snell et al., 2017); Proto-MAML head
initialisation W = 2c, b = -|c|^2 (Triantafillou et al., 2020, Sec. 3.2).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from free_common.models import Classifier

__all__ = [
    "HEAD_KINDS",
    "EpisodeFeatures",
    "HeadConfig",
    "ProtoEpisode",
    "ProtoMamlEpisode",
    "SupportStatsBatchNorm2d",
    "episode_module",
    "proto_maml_head",
    "prototypes",
    "squared_euclidean_logits",
]


class _SupportCount:
    """Carries the number of support rows of the current call to every BN layer."""

    def __init__(self) -> None:
        self.n_support: int | torch.SymInt = 0


class SupportStatsBatchNorm2d(nn.Module):
    """BatchNorm2d whose statistics come from the first ``n_support`` rows of its input.

    Args:
        bn: the layer to replace; its affine parameters and eps are copied.
        count: shared holder of the number of support rows.
    """

    def __init__(self, bn: nn.BatchNorm2d, count: _SupportCount) -> None:
        super().__init__()
        channels = bn.num_features
        weight = bn.weight.detach().clone() if bn.affine else torch.ones(channels)
        bias = bn.bias.detach().clone() if bn.affine else torch.zeros(channels)
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.eps = float(bn.eps)
        self._count = count

    def forward(self, x: Tensor) -> Tensor:
        """Normalise ``x`` of shape (S + Q, C, H, W) with the statistics of ``x[:S]``."""
        support = x[: self._count.n_support]
        mean = support.mean(dim=(0, 2, 3), keepdim=True)
        centred = support - mean
        var = (centred * centred).mean(dim=(0, 2, 3), keepdim=True)
        scale = self.weight.view(1, -1, 1, 1) * torch.rsqrt(var + self.eps)
        return x * scale + (self.bias.view(1, -1, 1, 1) - mean * scale)


def _swap_batchnorm(module: nn.Module, count: _SupportCount) -> int:
    """Replace every ``nn.BatchNorm2d`` below ``module`` in place; return how many."""
    swapped = 0
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, SupportStatsBatchNorm2d(child, count))
            swapped += 1
        else:
            swapped += _swap_batchnorm(child, count)
    return swapped


class EpisodeFeatures(nn.Module):
    """Backbone features of support and query in one batch, BN from support statistics.

    Args:
        backbone: classifier (``forward_features(x (B, C, H, W)) -> (B, D)``); it is
            deep-copied, so the caller's model is untouched.
    """

    def __init__(self, backbone: Classifier) -> None:
        super().__init__()
        self._count = _SupportCount()
        self.backbone: Classifier = copy.deepcopy(backbone).eval()
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.num_batchnorm = _swap_batchnorm(self.backbone, self._count)

    def forward(self, support: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        """Features of support (S, C, H, W) and query (Q, C, H, W): ((S, D), (Q, D))."""
        n_support = support.shape[0]
        self._count.n_support = n_support
        features = self.backbone.forward_features(torch.cat([support, query], dim=0))
        return features[:n_support], features[n_support:]


def prototypes(support_features: Tensor, support_onehot: Tensor) -> Tensor:
    """Class means (N, D) of support features (S, D) under one-hot labels (S, N).

    An empty class gets a zero prototype instead of a division by zero.
    """
    counts = support_onehot.sum(dim=0).clamp_min(1.0)
    return (support_onehot.transpose(0, 1) @ support_features) / counts.unsqueeze(1)


def squared_euclidean_logits(query_features: Tensor, protos: Tensor, scale: float) -> Tensor:
    """Logits -scale * |q - c|^2 (Q, N), expanded as |q|^2 - 2 q.c + |c|^2 (no cdist)."""
    q_sq = (query_features * query_features).sum(dim=1, keepdim=True)
    c_sq = (protos * protos).sum(dim=1).unsqueeze(0)
    return scale * (2.0 * (query_features @ protos.transpose(0, 1)) - q_sq - c_sq)


def proto_maml_head(
    support_features: Tensor, support_onehot: Tensor, steps: int, lr: float, scale: float
) -> tuple[Tensor, Tensor]:
    """Linear head initialised from prototypes, then ``steps`` SGD steps on support CE.

    The head acts on features multiplied by ``sqrt(scale)``, so that its initial logits
    ``F' W^T + b`` with ``W = 2 c'``, ``b = -|c'|^2`` equal the prototype logits
    ``-scale |f - c|^2`` up to a per-query constant and the curvature of the loss is of order
    one (a learning rate of order one is stable whatever the feature width). The gradient of
    the mean softmax cross-entropy is written in closed form: with
    ``G = (softmax(F' W^T + b) - Y) / S``, ``dW = G^T F'`` and ``db = sum_s G``.

    Args:
        support_features: (S, D) unscaled features.
        support_onehot: (S, N) float one-hot labels.
        steps: number of SGD steps (unrolled into the graph).
        lr: SGD learning rate.
        scale: logit scale (inverse temperature).

    Returns:
        ``(weight (N, D), bias (N,))`` acting on features scaled by ``sqrt(scale)``.
    """
    feats = support_features * math.sqrt(scale)
    protos = prototypes(feats, support_onehot)
    weight = 2.0 * protos
    bias = -(protos * protos).sum(dim=1)
    n_support = support_onehot.sum()  # number of labelled rows, S
    for _ in range(steps):
        probs = torch.softmax(feats @ weight.transpose(0, 1) + bias, dim=1)
        grad = (probs - support_onehot) / n_support
        weight = weight - lr * (grad.transpose(0, 1) @ feats)
        bias = bias - lr * grad.sum(dim=0)
    return weight, bias


class ProtoEpisode(nn.Module):
    """Nearest-prototype episode graph.

    Args:
        backbone: classifier exposing ``forward_features``.
        scale: logit scale; logits are ``-scale * |q - c|^2``.
    """

    def __init__(self, backbone: Classifier, scale: float) -> None:
        super().__init__()
        self.features: EpisodeFeatures = EpisodeFeatures(backbone)
        self.scale = scale

    def forward(self, support: Tensor, support_onehot: Tensor, query: Tensor) -> Tensor:
        """Logits (Q, N) for support (S, C, H, W), one-hot (S, N), query (Q, C, H, W)."""
        support_f, query_f = self.features(support, query)
        protos = prototypes(support_f, support_onehot)
        return squared_euclidean_logits(query_f, protos, self.scale)


class ProtoMamlEpisode(nn.Module):
    """Episode graph that fine-tunes a prototype-initialised linear head on the support set.

    Args:
        backbone: classifier exposing ``forward_features``.
        steps: SGD steps unrolled into the graph.
        lr: SGD learning rate.
        scale: logit scale of the initial head.
    """

    def __init__(self, backbone: Classifier, steps: int, lr: float, scale: float) -> None:
        super().__init__()
        self.features: EpisodeFeatures = EpisodeFeatures(backbone)
        self.steps = steps
        self.lr = lr
        self.scale = scale

    def forward(self, support: Tensor, support_onehot: Tensor, query: Tensor) -> Tensor:
        """Logits (Q, N) for support (S, C, H, W), one-hot (S, N), query (Q, C, H, W)."""
        support_f, query_f = self.features(support, query)
        weight, bias = proto_maml_head(support_f, support_onehot, self.steps, self.lr, self.scale)
        logits: Tensor = (query_f * math.sqrt(self.scale)) @ weight.transpose(0, 1) + bias
        return logits


@dataclass(frozen=True)
class HeadConfig:
    """Which head an episode graph ends with.

    Attributes:
        kind: ``"proto"`` or ``"protomaml"``.
        steps: SGD steps of the Proto-MAML head (ignored for ``"proto"``).
        lr: its learning rate.
        scale: logit scale (inverse temperature); ``None`` means ``1 / num_features``, which
            keeps logits of order one (softmax not saturated, float32 parity within 1e-4).
    """

    kind: str = "proto"
    steps: int = 5
    lr: float = 0.5
    scale: float | None = None

    def __post_init__(self) -> None:
        """Reject unknown kinds and invalid settings."""
        if self.kind not in HEAD_KINDS:
            raise ValueError(f"unknown head kind {self.kind!r}: expected one of {HEAD_KINDS}")
        if self.kind == "protomaml" and (self.steps < 1 or not self.lr > 0):
            raise ValueError(f"protomaml needs steps >= 1 and lr > 0, got {self.steps}, {self.lr}")
        if self.scale is not None and not self.scale > 0:
            raise ValueError(f"scale must be positive, got {self.scale}")

    def resolved_scale(self, num_features: int) -> float:
        """The logit scale for a backbone with ``num_features`` outputs."""
        return self.scale if self.scale is not None else 1.0 / num_features


HEAD_KINDS = ("proto", "protomaml")


def episode_module(backbone: Classifier, head: HeadConfig) -> nn.Module:
    """The eval-mode episode graph for ``head`` around a copy of ``backbone``."""
    scale = head.resolved_scale(backbone.num_features)
    if head.kind == "proto":
        return ProtoEpisode(backbone, scale).eval()
    return ProtoMamlEpisode(backbone, head.steps, head.lr, scale).eval()
