"""Teachers (the clients' pre-trained classifiers) and where the FREE trainer gets them.

A :class:`Teacher` is one frozen classifier plus the names of its classes. The trainer
never holds the whole pool: it asks a :class:`TeacherSource` for the ids, loads only the
teachers sampled in an iteration and keeps a few in a :class:`TeacherCache` (LRU). Every
teacher is its own module (the published multi-architecture branch aliased one module
for all teachers; that defect is fixed here, see ``README.md`` in this folder).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from free_common.models.spec import ModelSpec

__all__ = [
    "InMemoryTeachers",
    "Teacher",
    "TeacherCache",
    "TeacherError",
    "TeacherSource",
    "default_class_keys",
    "teacher_from_state_dict",
]


class TeacherError(ValueError):
    """A teacher whose class keys, spec or weights are inconsistent, or an unknown id."""


def default_class_keys(teacher_id: str, num_classes: int) -> tuple[str, ...]:
    """Private pseudo-classes: output ``i`` of teacher ``t`` is the class ``"t/i"``."""
    return tuple(f"{teacher_id}/{i}" for i in range(num_classes))


@dataclass(frozen=True)
class Teacher:
    """One pre-trained classifier.

    Attributes:
        teacher_id: unique id in the pool.
        spec: the model spec (architecture, input size and channels, classes).
        model: the classifier; put in eval mode with gradients off for its parameters.
            ``model(x)`` takes float images in [0, 1] of shape (B, spec.in_channels,
            spec.image_size, spec.image_size) and returns logits (B, spec.num_classes).
        class_keys: ``class_keys[i]`` names the class behind output ``i``; equal keys
            across teachers are merged in the memory bank.
    """

    teacher_id: str
    spec: ModelSpec
    model: nn.Module
    class_keys: tuple[str, ...]

    def __post_init__(self) -> None:
        """Check the keys and freeze the module."""
        if not self.teacher_id:
            raise TeacherError("teacher_id must be a non-empty string")
        if len(self.class_keys) != self.spec.num_classes:
            raise TeacherError(
                f"teacher {self.teacher_id}: {len(self.class_keys)} class keys for "
                f"{self.spec.num_classes} outputs"
            )
        if len(set(self.class_keys)) != len(self.class_keys):
            raise TeacherError(f"teacher {self.teacher_id}: duplicate class keys")
        self.model.eval()
        self.model.requires_grad_(False)

    @property
    def num_classes(self) -> int:
        """Number of outputs (= classes)."""
        return self.spec.num_classes

    def to(self, device: torch.device) -> Teacher:
        """Move the module to ``device`` (in place) and return self."""
        self.model.to(device)
        return self


@runtime_checkable
class TeacherSource(Protocol):
    """Where the trainer finds teachers (the federation's model pool implements this)."""

    def ids(self) -> list[str]:
        """Ids of every accepted teacher, in a stable order."""
        ...

    def load(self, teacher_id: str) -> Teacher:
        """Load one teacher (a fresh module each call); raises KeyError-like errors."""
        ...


class InMemoryTeachers:
    """A :class:`TeacherSource` over a list of already-built teachers (tests, benches)."""

    def __init__(self, teachers: Iterable[Teacher]) -> None:
        self._teachers: dict[str, Teacher] = {}
        self.add(teachers)

    def add(self, teachers: Iterable[Teacher]) -> None:
        """Add teachers; an id already present raises :class:`TeacherError`."""
        for teacher in teachers:
            if teacher.teacher_id in self._teachers:
                raise TeacherError(f"duplicate teacher id {teacher.teacher_id!r}")
            self._teachers[teacher.teacher_id] = teacher

    def ids(self) -> list[str]:
        """Ids in insertion order."""
        return list(self._teachers)

    def load(self, teacher_id: str) -> Teacher:
        """The stored teacher (the same object each call)."""
        try:
            return self._teachers[teacher_id]
        except KeyError:
            raise TeacherError(f"unknown teacher id {teacher_id!r}") from None


class TeacherCache:
    """Least-recently-used cache of loaded teachers in front of a :class:`TeacherSource`.

    Loading never touches the global RNG (it runs under ``torch.random.fork_rng``), so
    cache hits and misses cannot change the course of a seeded run.
    """

    def __init__(self, source: TeacherSource, capacity: int, device: torch.device) -> None:
        if capacity < 1:
            raise TeacherError(f"cache capacity must be >= 1, got {capacity}")
        self.source = source
        self.capacity = capacity
        self.device = device
        self._cache: OrderedDict[str, Teacher] = OrderedDict()

    def get(self, teacher_id: str) -> Teacher:
        """The teacher, loaded on a miss and moved to the cache's device."""
        if teacher_id in self._cache:
            self._cache.move_to_end(teacher_id)
            return self._cache[teacher_id]
        with torch.random.fork_rng(devices=[]):
            teacher = self.source.load(teacher_id).to(self.device)
        self._cache[teacher_id] = teacher
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return teacher

    def get_many(self, teacher_ids: Sequence[str]) -> list[Teacher]:
        """Teachers for ``teacher_ids`` (repeats allowed), each its own loaded module."""
        return [self.get(t) for t in teacher_ids]


def teacher_from_state_dict(
    teacher_id: str,
    spec: ModelSpec,
    state_dict: dict[str, Tensor],
    class_keys: Sequence[str] | None = None,
) -> Teacher:
    """Build a teacher from its spec and weights (a new module, never shared).

    Args:
        teacher_id: id in the pool.
        spec: the architecture to build with ``free_common.models.build_model``.
        state_dict: its weights (strict load).
        class_keys: class names; default :func:`default_class_keys`.
    """
    from free_common.models import build_model

    with torch.random.fork_rng(devices=[]):
        model = build_model(spec)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise TeacherError(f"teacher {teacher_id}: weights do not fit its spec: {err}") from err
    keys = tuple(class_keys) if class_keys is not None else None
    return Teacher(
        teacher_id, spec, model, keys or default_class_keys(teacher_id, spec.num_classes)
    )
