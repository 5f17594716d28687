"""ModelSpec: the serialisable description from which any model in the registry is rebuilt."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

ARCHITECTURES: tuple[str, ...] = ("conv4", "resnet10", "resnet18")
MAX_CHANNELS = 4
MAX_IMAGE_SIZE = 224
MAX_CLASSES = 1000
MAX_WIDTH = 512


class SpecError(ValueError):
    """A model spec names an unknown architecture or holds out-of-range values."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a classifier without its weights.

    Input images are float pixels in [0, 1] of shape (B, in_channels, image_size, image_size);
    the model normalises them with ``mean``/``std`` itself, so callers never normalise.

    Attributes:
        arch: one of :data:`ARCHITECTURES`.
        in_channels: 1 (grey) or 3 (RGB).
        image_size: side of the square input.
        num_classes: outputs of the classification head.
        width: base number of convolution filters.
        mean: per-channel normalisation mean (length ``in_channels``).
        std: per-channel normalisation std (length ``in_channels``).
    """

    arch: str
    in_channels: int = 1
    image_size: int = 32
    num_classes: int = 5
    width: int = 32
    mean: tuple[float, ...] = field(default=(0.5,))
    std: tuple[float, ...] = field(default=(0.5,))

    def __post_init__(self) -> None:
        """Validate every field; raise :class:`SpecError` naming the bad one."""
        if self.arch not in ARCHITECTURES:
            raise SpecError(f"unknown architecture {self.arch!r}: known {', '.join(ARCHITECTURES)}")
        _check_int("in_channels", self.in_channels, 1, MAX_CHANNELS)
        _check_int("image_size", self.image_size, 8, MAX_IMAGE_SIZE)
        _check_int("num_classes", self.num_classes, 2, MAX_CLASSES)
        _check_int("width", self.width, 1, MAX_WIDTH)
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != self.in_channels:
                raise SpecError(f"{name} has {len(values)} values for {self.in_channels} channels")
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                raise SpecError(f"{name} must hold finite numbers, got {values!r}")
        if any(s <= 0 for s in self.std):
            raise SpecError(f"std must be positive, got {self.std!r}")

    def same_backbone(self, other: ModelSpec) -> bool:
        """Whether ``other``'s backbone weights fit this model's (everything but the head)."""
        return (self.arch, self.width, self.in_channels, self.image_size, self.mean, self.std) == (
            other.arch,
            other.width,
            other.in_channels,
            other.image_size,
            other.mean,
            other.std,
        )

    def same_input(self, other: ModelSpec) -> bool:
        """Whether ``other`` takes the same images as this model (channels and side)."""
        return (self.in_channels, self.image_size) == (other.in_channels, other.image_size)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise :class:`SpecError`."""
        if not isinstance(data, dict):
            raise SpecError(f"model spec must be an object, got {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise SpecError(f"unknown model spec keys: {', '.join(sorted(unknown))}")
        if "arch" not in data:
            raise SpecError("model spec needs 'arch'")
        kwargs = dict(data)
        for name in ("mean", "std"):
            if name in kwargs:
                values = kwargs[name]
                if not isinstance(values, (list, tuple)) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
                ):
                    raise SpecError(f"{name} must be a list of numbers, got {values!r}")
                kwargs[name] = tuple(float(v) for v in values)
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        """Inverse of :meth:`to_json`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SpecError(f"model spec is not valid JSON: {err}") from err
        return cls.from_dict(data)


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SpecError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
