"""Deterministic assignment of classes and architectures to simulated data owners.

In simulation every owner gets ``classes_per_owner`` classes of the source's training
classes and one architecture from the run's mix. Owners take consecutive windows of a seeded
permutation of the classes; each window starts ``classes_per_owner - overlap`` classes after
the previous one, so neighbours share ``overlap`` classes (0: disjoint). When the windows
run out, a fresh permutation is drawn and the classes are reused. Everything derives from
``(partition_id, num_partitions, seed)``, so the server, each owner and any re-run agree
without talking to each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from free_common.models.spec import ARCHITECTURES, ModelSpec

__all__ = [
    "OwnerAssignment",
    "PartitionError",
    "assign_owner",
    "owner_id_for",
    "parse_arch_mix",
    "width_for",
]


class PartitionError(ValueError):
    """Bad partition id, class count or architecture mix."""


@dataclass(frozen=True)
class OwnerAssignment:
    """What one simulated owner holds.

    Attributes:
        owner_id: stable owner name, e.g. ``"owner-007"``.
        classes: indices of its classes in the meta-train split (label i -> classes[i]).
        spec: the architecture it trains.
    """

    owner_id: str
    classes: tuple[int, ...]
    spec: ModelSpec


def owner_id_for(partition_id: int) -> str:
    """The owner name of a simulated partition."""
    return f"owner-{partition_id:03d}"


def parse_arch_mix(text: str) -> list[tuple[str, int]]:
    """Parse ``"conv4:2,resnet10:1,resnet18:1"`` into ``[(arch, weight), ...]``.

    A bare name counts weight 1. Raises :class:`PartitionError` on unknown names or weights.
    """
    mix: list[tuple[str, int]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition(":")
        name = name.strip()
        if name not in ARCHITECTURES:
            raise PartitionError(f"unknown architecture {name!r} in mix {text!r}")
        try:
            w = int(weight) if weight else 1
        except ValueError:
            raise PartitionError(f"weight of {name!r} must be an integer in {text!r}") from None
        if w < 0:
            raise PartitionError(f"weight of {name!r} must be >= 0 in {text!r}")
        if w:
            mix.append((name, w))
    if not mix:
        raise PartitionError(f"architecture mix {text!r} names no architecture")
    return mix


def _arch_cycle(mix: Sequence[tuple[str, int]]) -> list[str]:
    """Interleaved cycle with exact proportions, e.g. 2:1:1 -> c, r10, c, r18."""
    total = sum(w for _, w in mix)
    slots: list[tuple[float, int, str]] = []
    for order, (name, w) in enumerate(mix):
        slots.extend(((k + 0.5) / w, order, name) for k in range(w))
    return [name for _, _, name in sorted(slots)][:total]


def width_for(arch: str, *, conv_width: int, resnet_width: int) -> int:
    """The base width of an owner's model: ``resnet_width`` for ResNets, else ``conv_width``."""
    return resnet_width if arch.startswith("resnet") else conv_width


def assign_owner(
    partition_id: int,
    num_partitions: int,
    *,
    num_classes: int,
    seed: int,
    arch_mix: str = "conv4:2,resnet10:1,resnet18:1",
    classes_per_owner: int = 5,
    overlap: int = 0,
    width: int = 32,
    resnet_width: int = 16,
    in_channels: int = 1,
    image_size: int = 32,
) -> OwnerAssignment:
    """The classes and architecture of simulated owner ``partition_id``.

    Args:
        partition_id: 0..num_partitions-1.
        num_partitions: simulated owners in the federation.
        num_classes: classes in the meta-train split.
        seed: run seed; the same seed gives the same assignment everywhere.
        arch_mix: architecture weights (see :func:`parse_arch_mix`).
        classes_per_owner: the N of each owner's N-way classifier.
        overlap: classes an owner shares with the next one (0 <= overlap < N).
        width: filters per block of a Conv4 owner.
        resnet_width: base width of a ResNet-10/18 owner (16: affordable to invert on a
            CPU server; see the model cost table in scripts/README.md).
        in_channels: image channels of the split.
        image_size: image side of the split.
    """
    if not 0 <= partition_id < num_partitions:
        raise PartitionError(f"partition id {partition_id} outside 0..{num_partitions - 1}")
    if not 2 <= classes_per_owner <= num_classes:
        raise PartitionError(
            f"{classes_per_owner} classes per owner from a source of {num_classes} classes "
            "(fed.classes-per-owner must be at least 2 and at most the class count)"
        )
    if not 0 <= overlap < classes_per_owner:
        raise PartitionError(
            f"class overlap {overlap} must be in 0..{classes_per_owner - 1} "
            f"(below the {classes_per_owner} classes per owner)"
        )
    stride = classes_per_owner - overlap
    per_pass = (num_classes - classes_per_owner) // stride + 1
    pass_index, slot = divmod(partition_id, per_pass)
    order = np.random.default_rng([seed, pass_index, 0x0F7EE]).permutation(num_classes)
    chosen = order[slot * stride : slot * stride + classes_per_owner]
    cycle = _arch_cycle(parse_arch_mix(arch_mix))
    arch = cycle[partition_id % len(cycle)]
    spec = ModelSpec(
        arch=arch,
        in_channels=in_channels,
        image_size=image_size,
        num_classes=classes_per_owner,
        width=width_for(arch, conv_width=width, resnet_width=resnet_width),
        mean=(0.5,) * in_channels,
        std=(0.5,) * in_channels,
    )
    return OwnerAssignment(owner_id_for(partition_id), tuple(int(c) for c in chosen), spec)
