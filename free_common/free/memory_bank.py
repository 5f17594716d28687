"""The memory bank of recovered images (FREE paper Sec. 4.3, "cross-task replay").

One ring buffer per class key (the newest ``max_per_class`` images are kept) plus a
global cap (the oldest images of the currently largest class go first). Images live on
the CPU as uint8 (like the published 8-bit PNGs) or float16, and the whole bank is part
of the trainer's checkpoint.

Defect fix (``free_common/free/README.md``, published defects): the published loop wrote
only the last
of the sampled teachers' images; here every inverted teacher's images are added, keyed
by its ``class_keys`` so that equal shared labels merge across clients.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from free_common.config import MemoryConfig

__all__ = ["MemoryBank", "MemoryBankError"]


class MemoryBankError(ValueError):
    """Images whose shape disagrees with the bank, or a malformed saved state."""


class MemoryBank:
    """Bounded per-class store of recovered images.

    Args:
        config: capacity and storage type.
    """

    def __init__(self, config: MemoryConfig) -> None:
        self.config = config
        self.dtype = torch.uint8 if config.dtype == "uint8" else torch.float16
        self._classes: dict[str, Tensor] = {}  # key -> (n, C, H, W), oldest first

    def __len__(self) -> int:
        """Images stored in total."""
        return sum(v.shape[0] for v in self._classes.values())

    @property
    def keys(self) -> list[str]:
        """Class keys in insertion order."""
        return list(self._classes)

    def count(self, key: str) -> int:
        """Images stored for ``key`` (0 when unknown)."""
        stored = self._classes.get(key)
        return 0 if stored is None else int(stored.shape[0])

    def add(self, images: Tensor, targets: Tensor, class_keys: tuple[str, ...]) -> None:
        """Store a recovered batch.

        Args:
            images: float images in [0, 1], shape (B, C, H, W) (any device).
            targets: (B,) int64 indices into ``class_keys``.
            class_keys: the teacher's class keys.
        """
        if images.ndim != 4 or targets.shape != (images.shape[0],):
            raise MemoryBankError(f"images {tuple(images.shape)} / targets {tuple(targets.shape)}")
        stored = self._encode(images.detach().cpu())
        targets = targets.cpu()
        for index in torch.unique(targets).tolist():
            self._append(class_keys[int(index)], stored[targets == index])
        self._enforce_global_cap()

    def sample(self, n: int, rng: torch.Generator) -> Tensor:
        """``n`` images drawn uniformly (with replacement) from every stored image.

        Returns:
            Float images in [0, 1], shape (n, C, H, W).

        Raises:
            MemoryBankError: the bank is empty.
        """
        keys = list(self._classes)
        counts = torch.tensor([self._classes[k].shape[0] for k in keys], dtype=torch.int64)
        total = int(counts.sum()) if keys else 0
        if total == 0:
            raise MemoryBankError("cannot sample from an empty memory bank")
        flat = torch.randint(total, (n,), generator=rng)
        ends = torch.cumsum(counts, 0)
        which = torch.searchsorted(ends, flat, right=True)  # (n,) class index of each draw
        rows = flat - (ends[which] - counts[which])
        stored = torch.stack(
            [self._classes[keys[c]][r] for c, r in zip(which.tolist(), rows.tolist(), strict=True)]
        )
        return self._decode(stored)

    def images(self, key: str, rows: Tensor) -> Tensor:
        """Float images in [0, 1] of class ``key`` at ``rows``, shape (len(rows), C, H, W)."""
        return self._decode(self._classes[key][rows])

    def _append(self, key: str, images: Tensor) -> None:
        old = self._classes.get(key)
        if old is not None and old.shape[1:] != images.shape[1:]:
            raise MemoryBankError(
                f"class {key!r} holds images {tuple(old.shape[1:])}, got {tuple(images.shape[1:])}"
            )
        merged = images if old is None else torch.cat([old, images])
        self._classes[key] = merged[-self.config.max_per_class :].clone()

    def _enforce_global_cap(self) -> None:
        excess = len(self) - self.config.max_images
        while excess > 0:
            largest = max(self._classes, key=lambda k: self._classes[k].shape[0])
            drop = min(excess, self._classes[largest].shape[0])
            self._classes[largest] = self._classes[largest][drop:].clone()
            if self._classes[largest].shape[0] == 0:
                del self._classes[largest]
            excess -= drop

    def _encode(self, images: Tensor) -> Tensor:
        if self.dtype == torch.uint8:
            return images.clamp(0, 1).mul(255).round().to(torch.uint8)
        return images.clamp(0, 1).to(torch.float16)

    def _decode(self, stored: Tensor) -> Tensor:
        if stored.dtype == torch.uint8:
            return stored.float().div(255)
        return stored.float()

    def state_dict(self) -> dict[str, Any]:
        """Keys (in order) and their stored tensors (CPU)."""
        return {"keys": list(self._classes), "images": [self._classes[k] for k in self._classes]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        keys, images = state["keys"], state["images"]
        if len(keys) != len(images):
            raise MemoryBankError(f"{len(keys)} keys for {len(images)} image tensors")
        self._classes = {str(k): v.to(self.dtype) for k, v in zip(keys, images, strict=True)}
