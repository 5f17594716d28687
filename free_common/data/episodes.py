"""N-way K-shot Q-query episodes sampled reproducibly from a :class:`ClassImages` split."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from free_common.data.base import ClassImages, DatasetError


@dataclass(frozen=True)
class Episode:
    """One few-shot task; labels are episode-local (0..n_way-1).

    Attributes:
        support_images: float pixels in [0, 1], shape (n_way * k_shot, C, H, W), class-major.
        support_labels: int64, shape (n_way * k_shot,).
        query_images: float pixels in [0, 1], shape (n_way * q_query, C, H, W), class-major.
        query_labels: int64, shape (n_way * q_query,).
        classes: the split-level class index behind each episode label.
    """

    support_images: Tensor
    support_labels: Tensor
    query_images: Tensor
    query_labels: Tensor
    classes: tuple[int, ...]

    @property
    def n_way(self) -> int:
        """Number of classes in the episode."""
        return len(self.classes)

    def to(self, device: torch.device | str) -> Episode:
        """A copy with every tensor on ``device``."""
        return Episode(
            self.support_images.to(device),
            self.support_labels.to(device),
            self.query_images.to(device),
            self.query_labels.to(device),
            self.classes,
        )


def to_float_images(pixels: np.ndarray) -> Tensor:
    """uint8 (N, C, H, W) -> float32 tensor in [0, 1]."""
    return torch.from_numpy(pixels).float().div_(255.0)


class EpisodeSampler:
    """Samples episodes from a split; the same seed gives the same sequence of episodes.

    Args:
        data: the split to sample from.
        n_way: classes per episode.
        k_shot: support images per class.
        q_query: query images per class.
        seed: seed of the sampler's own random generator.
    """

    def __init__(self, data: ClassImages, n_way: int, k_shot: int, q_query: int, seed: int = 0):
        if n_way < 2 or k_shot < 1 or q_query < 1:
            raise ValueError(
                f"need n_way>=2, k_shot>=1, q_query>=1; got {n_way}, {k_shot}, {q_query}"
            )
        self.by_class = data.indices_by_class()
        eligible = [c for c, rows in enumerate(self.by_class) if len(rows) >= k_shot + q_query]
        if len(eligible) < n_way:
            raise DatasetError(
                f"{data.name}: only {len(eligible)} classes have >= {k_shot + q_query} images; "
                f"a {n_way}-way {k_shot}-shot {q_query}-query episode needs {n_way}"
            )
        self.data, self.eligible = data, np.asarray(eligible)
        self.n_way, self.k_shot, self.q_query = n_way, k_shot, q_query
        self.rng = np.random.default_rng(seed)

    def sample(self) -> Episode:
        """Draw the next episode."""
        classes = self.rng.choice(self.eligible, size=self.n_way, replace=False)
        support, query = [], []
        for c in classes:
            rows = self.rng.choice(self.by_class[c], size=self.k_shot + self.q_query, replace=False)
            support.append(rows[: self.k_shot])
            query.append(rows[self.k_shot :])
        labels = np.arange(self.n_way)
        return Episode(
            support_images=to_float_images(self.data.images[np.concatenate(support)]),
            support_labels=torch.from_numpy(np.repeat(labels, self.k_shot)),
            query_images=to_float_images(self.data.images[np.concatenate(query)]),
            query_labels=torch.from_numpy(np.repeat(labels, self.q_query)),
            classes=tuple(int(c) for c in classes),
        )

    def episodes(self, n: int) -> Iterator[Episode]:
        """The next ``n`` episodes."""
        for _ in range(n):
            yield self.sample()
