"""Poisoned submissions, each made from an honest owner's model: the attacks of issue 17.

Every attack starts from an honest :class:`Model` (a spec, its weights and the meta-train
classes behind its outputs) and returns another :class:`Model` whose ``classes`` are the
classes it *claims* (their names are what its card would carry); ``kind`` and ``detail``
record what was done, for the bench's ground truth.

- :func:`label_permuted`: the head's rows permuted by a derangement, names unchanged:
  output ``i`` now fires for the class named by output ``perm[i]``.
- :func:`backdoored`: trained on its own images plus copies stamped with a trigger patch
  (a 4x4 checkerboard near the bottom-right corner) labelled with a target class.
- :func:`false_names`: trained on another owner's classes, claiming its own names.
- :func:`constant_class`: fine-tuned to answer one class for every image.
- :func:`scaled_replacement`: model replacement (Bagdasaryan et al., AISTATS 2020):
  ``R + s * (M - R)`` with ``R`` the attacker's estimate of the others' mean weights, so
  that an average of the pool is dominated by ``M``.
- :func:`free_rider`: a copy of another owner's model plus Gaussian noise.

Training from scratch is the owners' own (``client.local_training``); fine-tuning is Adam
on the CPU. Both are seeded from ``rng``, so an attack is a pure function of its inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor

from client.local_training import train_local_classifier
from free_common.data.base import ClassImages
from free_common.models import ModelSpec, build_model

__all__ = [
    "ATTACKS",
    "TRIGGER_SIZE",
    "AttackError",
    "Model",
    "backdoored",
    "constant_class",
    "derangement",
    "false_names",
    "fine_tune",
    "free_rider",
    "label_permuted",
    "scaled_replacement",
    "stamp_trigger",
]

ATTACKS: tuple[str, ...] = (
    "label_permuted",
    "backdoor",
    "false_names",
    "constant_class",
    "scaled_replacement",
    "free_rider",
)
TRIGGER_SIZE = 4
_TRIGGER_MARGIN = 2
_HEAD = "head"


class AttackError(ValueError):
    """An attack asked of a model it cannot be made from (e.g. fewer than 2 classes)."""


@dataclass(frozen=True)
class Model:
    """A classifier as an owner would submit it.

    Attributes:
        model_id: its id in a pool.
        spec: its architecture.
        state_dict: its weights (CPU tensors).
        classes: the meta-train class index behind each output, as claimed.
        kind: ``"honest"`` or one of :data:`ATTACKS`.
        source: the id of the honest model it was made from ("" for an honest one).
        detail: what the attack did (permutation, target class, scale, noise, ...).
    """

    model_id: str
    spec: ModelSpec
    state_dict: dict[str, Tensor]
    classes: tuple[int, ...]
    kind: str = "honest"
    source: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


def derangement(n: int, rng: np.random.Generator) -> list[int]:
    """A uniformly drawn permutation of ``range(n)`` that moves every element (n >= 2)."""
    if n < 2:
        raise AttackError(f"a derangement needs at least 2 elements, got {n}")
    while True:
        perm = [int(i) for i in rng.permutation(n)]
        if all(p != i for i, p in enumerate(perm)):
            return perm


def label_permuted(model: Model, rng: np.random.Generator, *, model_id: str) -> Model:
    """``model`` with its head's rows permuted by a derangement; names unchanged."""
    perm = derangement(model.spec.num_classes, rng)
    state = dict(model.state_dict)
    for name in (f"{_HEAD}.weight", f"{_HEAD}.bias"):
        state[name] = model.state_dict[name][perm].clone()
    return Model(
        model_id,
        model.spec,
        state,
        model.classes,
        "label_permuted",
        model.model_id,
        {"perm": perm},
    )


def stamp_trigger(images: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Copies of ``images`` (N, C, H, W) with the backdoor trigger stamped on.

    The trigger is a :data:`TRIGGER_SIZE`-pixel checkerboard (255/0) whose corner sits
    2 pixels from the bottom-right corner.
    """
    out = np.array(images, copy=True)
    h, w = out.shape[-2:]
    top, left = h - _TRIGGER_MARGIN - TRIGGER_SIZE, w - _TRIGGER_MARGIN - TRIGGER_SIZE
    yy, xx = np.indices((TRIGGER_SIZE, TRIGGER_SIZE))
    out[..., top : top + TRIGGER_SIZE, left : left + TRIGGER_SIZE] = 255 * ((yy + xx) % 2)
    return out


def fine_tune(
    spec: ModelSpec,
    state_dict: dict[str, Tensor],
    images: npt.NDArray[np.uint8],
    labels: npt.NDArray[np.int64],
    *,
    epochs: int,
    seed: int,
    lr: float = 1e-3,
    batch_size: int = 64,
) -> dict[str, Tensor]:
    """Adam fine-tuning of ``state_dict`` on uint8 ``images`` (N, C, H, W) and ``labels``.

    Returns:
        The fine-tuned weights (CPU tensors, BatchNorm statistics updated).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(spec)
    model.load_state_dict(state_dict)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(np.ascontiguousarray(images))
    y_all = torch.from_numpy(np.ascontiguousarray(labels))
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y_all), generator=generator)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            loss = F.cross_entropy(model(x_all[rows].float().div(255.0)), y_all[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _train(
    spec: ModelSpec,
    images: npt.NDArray[np.uint8],
    labels: npt.NDArray[np.int64],
    names: tuple[str, ...],
    *,
    epochs: int,
    seed: int,
) -> dict[str, Tensor]:
    """A fresh ``spec`` classifier trained as an owner trains it (best hold-out epoch)."""
    data = ClassImages("attack", images, labels, names)
    return train_local_classifier(
        data, spec, epochs=epochs, batch_size=64, seed=seed, device="cpu"
    ).state_dict


def backdoored(
    model: Model,
    data: ClassImages,
    rng: np.random.Generator,
    *,
    model_id: str,
    poison_fraction: float = 0.3,
    epochs: int = 30,
) -> Model:
    """A model trained from scratch on the owner's images plus trigger-stamped copies.

    A ``poison_fraction`` share of the owner's images, drawn from the classes other than
    a random target, is added again with the trigger stamped on and the target as label
    (BadNets). Training is the owner's own (``client.local_training``, batch 64).
    """
    own = data.subset(model.classes)
    target = int(rng.integers(model.spec.num_classes))
    others = np.flatnonzero(own.labels != target)
    picked = rng.choice(others, max(1, round(poison_fraction * len(own.labels))), replace=True)
    images = np.concatenate([own.images, stamp_trigger(own.images[picked])])
    labels = np.concatenate([own.labels, np.full(len(picked), target, dtype=np.int64)])
    seed = int(rng.integers(2**31))
    state = _train(model.spec, images, labels, own.class_names, epochs=epochs, seed=seed)
    return Model(
        model_id,
        model.spec,
        state,
        model.classes,
        "backdoor",
        model.model_id,
        {"target": target, "poisoned_images": len(picked)},
    )


def false_names(
    model: Model,
    other: Model,
    data: ClassImages,
    rng: np.random.Generator,
    *,
    model_id: str,
    epochs: int = 30,
) -> Model:
    """A model trained from scratch on ``other``'s classes that claims ``model``'s names."""
    if other.spec.num_classes != model.spec.num_classes:
        raise AttackError("false names need two models with the same number of classes")
    theirs = data.subset(other.classes)
    seed = int(rng.integers(2**31))
    state = _train(
        model.spec, theirs.images, theirs.labels, theirs.class_names, epochs=epochs, seed=seed
    )
    return Model(
        model_id,
        model.spec,
        state,
        model.classes,
        "false_names",
        model.model_id,
        {"trained_on": list(other.classes), "other": other.model_id},
    )


def constant_class(
    model: Model, data: ClassImages, rng: np.random.Generator, *, model_id: str, epochs: int = 10
) -> Model:
    """``model`` fine-tuned so that every one of its owner's images gets one class."""
    own = data.subset(model.classes)
    target = int(rng.integers(model.spec.num_classes))
    labels = np.full(len(own.labels), target, dtype=np.int64)
    seed = int(rng.integers(2**31))
    state = fine_tune(model.spec, model.state_dict, own.images, labels, epochs=epochs, seed=seed)
    return Model(
        model_id,
        model.spec,
        state,
        model.classes,
        "constant_class",
        model.model_id,
        {"target": target},
    )


def scaled_replacement(
    model: Model, peers: Sequence[Model], *, model_id: str, scale: float = 10.0
) -> Model:
    """Model replacement: ``R + scale * (M - R)`` on every float parameter.

    ``R`` is the mean of ``peers`` of the same spec (the attacker's estimate of the others'
    average; zeros when there is none). BatchNorm running statistics are kept.
    """
    same = [p for p in peers if p.spec == model.spec]
    params = _parameter_names(model.spec)
    state = dict(model.state_dict)
    for name in params:
        mine = model.state_dict[name].double()
        ref = torch.stack([p.state_dict[name].double() for p in same]).mean(0) if same else 0
        state[name] = (ref + scale * (mine - ref)).to(model.state_dict[name].dtype)
    return Model(
        model_id,
        model.spec,
        state,
        model.classes,
        "scaled_replacement",
        model.model_id,
        {"scale": scale, "reference_models": len(same)},
    )


def free_rider(
    other: Model, rng: np.random.Generator, *, model_id: str, noise: float | None = None
) -> Model:
    """A copy of ``other`` with Gaussian noise of ``noise`` x each weight tensor's std.

    ``noise`` defaults to a draw from [0.05, 0.3]; BatchNorm statistics are copied as is.
    """
    level = float(rng.uniform(0.05, 0.3)) if noise is None else noise
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    params = _parameter_names(other.spec)
    state = {}
    for name, value in other.state_dict.items():
        if name in params and value.numel() > 1:
            value = value + torch.randn(value.shape, generator=generator) * value.std() * level
        state[name] = value.clone()
    return Model(
        model_id,
        other.spec,
        state,
        other.classes,
        "free_rider",
        other.model_id,
        {"noise": level},
    )


def _parameter_names(spec: ModelSpec) -> set[str]:
    """Names of the learnable tensors of ``spec`` (not the BatchNorm buffers)."""
    with torch.random.fork_rng(devices=[]):
        return {name for name, _ in build_model(spec).named_parameters()}
