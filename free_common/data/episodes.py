"""N-way K-shot Q-query episodes sampled reproducibly from a :class:`ClassImages` split."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from free_common.data.base import ClassImages, DatasetError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Episode:
    """One few-shot task; labels are episode-local (0..n_way-1).

    Attributes:
        support_images: float pixels in [0, 1], shape (n_way * k_shot, C, H, W), class-major.
        support_labels: int64, shape (n_way * k_shot,).
        query_images: float pixels in [0, 1], shape (n_way * q_query, C, H, W), class-major.
        query_labels: int64, shape (n_way * q_query,).
        classes: the split-level class index behind each episode label.
        domain: the domain every class was drawn from when the sampler draws each task
            within one domain (``by_domain``), else ``""``.
    """

    support_images: Tensor
    support_labels: Tensor
    query_images: Tensor
    query_labels: Tensor
    classes: tuple[int, ...]
    domain: str = ""

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
            self.domain,
        )


def to_float_images(pixels: np.ndarray) -> Tensor:
    """uint8 (N, C, H, W) -> float32 tensor in [0, 1]."""
    return torch.from_numpy(pixels).float().div_(255.0)


class EpisodeSampler:
    """Samples episodes from a split; the same seed gives the same sequence of episodes.

    A split that joins several domains (``data.domains``, e.g. ``glyphs+icons``) gives
    tasks whose classes come from any domain, unless ``by_domain`` is set: then every task
    draws its classes from one domain, the domains taking turns in order of first
    appearance (task ``i`` from domain ``i mod D``), so the tasks are spread evenly over
    the domains. That is the multi-domain protocol of FREE (Wei et al., CVPR 2024,
    section 5: the meta-test tasks are constructed evenly across the meta-test sets, and
    accuracy is their mean). A domain with fewer than ``n_way`` usable classes gets no
    task. On a split of one domain ``by_domain`` changes nothing.

    Args:
        data: the split to sample from.
        n_way: classes per episode.
        k_shot: support images per class.
        q_query: query images per class.
        seed: seed of the sampler's own random generator.
        by_domain: draw each task within one domain, the domains in turn.
    """

    def __init__(
        self,
        data: ClassImages,
        n_way: int,
        k_shot: int,
        q_query: int,
        seed: int = 0,
        *,
        by_domain: bool = False,
    ):
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
        self.groups = domain_groups(data, eligible, n_way) if by_domain else []
        self.drawn = 0

    def sample(self) -> Episode:
        """Draw the next episode."""
        domain, pool = "", self.eligible
        if self.groups:
            domain, pool = self.groups[self.drawn % len(self.groups)]
        self.drawn += 1
        classes = self.rng.choice(pool, size=self.n_way, replace=False)
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
            domain=domain,
        )

    def episodes(self, n: int) -> Iterator[Episode]:
        """The next ``n`` episodes."""
        for _ in range(n):
            yield self.sample()


def domain_groups(
    data: ClassImages, eligible: list[int], n_way: int
) -> list[tuple[str, npt.NDArray[np.int64]]]:
    """Each domain with its usable classes, for tasks drawn within one domain.

    Args:
        data: the split (its ``domains`` name each class's domain).
        eligible: the classes with enough images for one task.
        n_way: classes per task.

    Returns:
        ``(domain, classes)`` in order of first appearance, the domains with at least
        ``n_way`` usable classes only; empty for a split of one domain.
    """
    order = list(dict.fromkeys(data.domains))
    if len(order) < 2:
        return []
    groups = []
    for domain in order:
        pool = np.asarray([c for c in eligible if data.domains[c] == domain], dtype=np.int64)
        if len(pool) >= n_way:
            groups.append((domain, pool))
        else:
            logger.warning(
                "%s: domain %s gets no %d-way task (%d usable classes)",
                data.name,
                domain,
                n_way,
                len(pool),
            )
    if not groups:
        raise DatasetError(
            f"{data.name}: no domain has {n_way} classes with enough images for a {n_way}-way task"
        )
    return groups
