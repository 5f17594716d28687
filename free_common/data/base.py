"""The in-memory image split every loader returns, and the errors loaders raise."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

SPLITS: tuple[str, ...] = ("train", "val", "test")


class DatasetError(ValueError):
    """A dataset path is missing, truncated or laid out differently than expected."""


def check_split_name(split: str) -> str:
    """Return ``split`` if it names a meta-split, else raise :class:`DatasetError`."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    return split


@dataclass(frozen=True)
class ClassImages:
    """Images of one meta-split, grouped by class.

    Attributes:
        name: dataset and split, e.g. ``"glyphs/train"``.
        images: uint8 pixels of shape (N, C, H, W).
        labels: int64 class index of each image, shape (N,), values in 0..num_classes-1.
        class_names: one human-readable (or hashed) name per class.
        domains: the domain (source) of each class when the split joins several
            (``glyphs+icons``); empty for one domain.
    """

    name: str
    images: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.int64]
    class_names: tuple[str, ...]
    domains: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Check shapes, dtypes and label range."""
        if self.images.ndim != 4:
            raise DatasetError(f"{self.name}: images must be (N, C, H, W), got {self.images.shape}")
        if self.images.dtype != np.uint8:
            raise DatasetError(f"{self.name}: images must be uint8, got {self.images.dtype}")
        if self.labels.shape != (self.images.shape[0],):
            raise DatasetError(
                f"{self.name}: {self.labels.shape[0]} labels for {self.images.shape[0]} images"
            )
        if self.labels.size and (self.labels.min() < 0 or self.labels.max() >= self.num_classes):
            raise DatasetError(f"{self.name}: labels outside 0..{self.num_classes - 1}")
        if self.domains and len(self.domains) != self.num_classes:
            raise DatasetError(
                f"{self.name}: {len(self.domains)} class domains for {self.num_classes} classes"
            )

    @property
    def num_classes(self) -> int:
        """Number of classes in the split."""
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def indices_by_class(self) -> list[npt.NDArray[np.int64]]:
        """Row indices of each class's images, in class order."""
        order = np.argsort(self.labels, kind="stable")
        counts = np.bincount(self.labels, minlength=self.num_classes)
        return [idx.astype(np.int64) for idx in np.split(order, np.cumsum(counts)[:-1])]

    def by_domain(self) -> dict[str, ClassImages]:
        """Each domain's classes as their own split, in order of first appearance.

        Empty when the split holds one domain (``domains`` empty or all equal): there is
        nothing to split. Each part is named ``"<name>[<domain>]"``.
        """
        order = list(dict.fromkeys(self.domains))
        if len(order) < 2:
            return {}
        parts: dict[str, ClassImages] = {}
        for domain in order:
            part = self.subset([c for c, d in enumerate(self.domains) if d == domain])
            parts[domain] = dataclasses.replace(part, name=f"{self.name}[{domain}]")
        return parts

    def subset(self, classes: list[int] | tuple[int, ...]) -> ClassImages:
        """The images of ``classes`` only, relabelled 0..len(classes)-1 in the given order."""
        by_class = self.indices_by_class()
        rows = [by_class[c] for c in classes]
        labels = np.concatenate([np.full(len(r), i, dtype=np.int64) for i, r in enumerate(rows)])
        return ClassImages(
            name=f"{self.name}[{len(classes)} classes]",
            images=self.images[np.concatenate(rows)],
            labels=labels,
            class_names=tuple(self.class_names[c] for c in classes),
            domains=tuple(self.domains[c] for c in classes) if self.domains else (),
        )
