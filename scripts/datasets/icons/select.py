"""Choose each concept's images: visible, not placeholders, one per distinct design.

Works on rendered icons only (no file access), so it is tested on tiny synthetic inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from .dedup import hamming

U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class SelectRules:
    """Selection thresholds; recorded in the manifest.

    Attributes:
        min_designs: concepts with fewer distinct designs are left out.
        max_distance: two images of one concept whose perceptual hashes differ by at most
            this many bits (of 64) are one design; the earlier theme's is kept.
        family_distance: the same, for two themes of one family (drawn from one another).
        same_drawing_mad: within one theme, images of two concepts whose mean absolute
            pixel difference is at most this (grey levels, 0-255) are one drawing standing
            in for both concepts, and are dropped from both.
    """

    min_designs: int = 10
    max_distance: int = 8
    family_distance: int = 12
    same_drawing_mad: float = 0.5

    def to_dict(self) -> dict[str, object]:
        """JSON-ready copy."""
        return asdict(self)


@dataclass(frozen=True)
class Rendered:
    """One rendered icon file.

    Attributes:
        image: uint8 (3, S, S) on mid-grey.
        phash: its 64-bit perceptual hash.
        rejected: why it is unusable (low contrast, placeholder, unreadable), or ``None``.
    """

    image: U8
    phash: int
    rejected: str | None


@dataclass(frozen=True)
class Candidate:
    """One theme's image of one concept.

    Attributes:
        theme: the theme's folder name.
        family: the theme's family (see ``themes.Theme``).
        render: the rendered image.
    """

    theme: str
    family: str
    render: Rendered


def mean_abs_difference(a: U8, b: U8) -> float:
    """Mean absolute difference of two equally shaped uint8 images, in grey levels."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def shared_drawings(
    images: Mapping[str, Mapping[str, U8]], max_mad: float
) -> dict[tuple[str, str], str]:
    """Images a theme uses for several concepts: one drawing standing in for all of them.

    Catches what file hashes cannot: copies that differ only in file metadata, and drawings
    that differ by a few pixels (an archive box labelled "zip" or "rar").

    Args:
        images: theme -> (concept -> its usable image there).
        max_mad: see :attr:`SelectRules.same_drawing_mad`.

    Returns:
        ``(theme, concept)`` -> the other concept whose image is the same drawing, for
        every image to drop.
    """
    shared: dict[tuple[str, str], str] = {}
    for theme, by_concept in images.items():
        names = list(by_concept)
        if len(names) < 2:
            continue
        stack = np.stack([by_concept[n] for n in names]).astype(np.float32)  # (n, C, S, S)
        for i, j in _close_pairs(stack, max_mad):
            if mean_abs_difference(by_concept[names[i]], by_concept[names[j]]) <= max_mad:
                shared.setdefault((theme, names[i]), names[j])
                shared.setdefault((theme, names[j]), names[i])
    return shared


def _close_pairs(stack: npt.NDArray[np.float32], max_mad: float) -> list[tuple[int, int]]:
    """Pairs ``i < j`` whose 8x8 block means differ by at most ``max_mad`` on average.

    The mean absolute difference of block means never exceeds that of the pixels, so every
    pair of images within ``max_mad`` is among them; it only prunes the exact comparison.
    """
    n, c, side, _ = stack.shape
    block = max(1, side // 8)
    coarse = stack.reshape(n, c, side // block, block, side // block, block).mean(axis=(3, 5))
    flat = coarse.reshape(n, -1)
    pairs: list[tuple[int, int]] = []
    for i in range(n - 1):
        distance = np.abs(flat[i + 1 :] - flat[i]).mean(axis=1)
        pairs.extend((i, i + 1 + int(k)) for k in np.flatnonzero(distance <= max_mad))
    return pairs


def select_designs(
    candidates: Sequence[Candidate], rules: SelectRules
) -> tuple[list[str], list[dict[str, str]]]:
    """One image per distinct design among one concept's candidates.

    Args:
        candidates: in the themes' pinned order (originals before the themes drawn from
            them), already free of unusable renders.
        rules: the thresholds.

    Returns:
        the themes whose image is kept, and one record (theme, reason) per theme dropped as
        an exact copy or a near duplicate of an earlier theme's image.
    """
    kept: list[Candidate] = []
    dropped: list[dict[str, str]] = []
    for cand in candidates:
        twin = next((k for k in kept if np.array_equal(k.render.image, cand.render.image)), None)
        reason = "same pixels as"
        if twin is None:
            reason = "near duplicate of"
            twin = next((k for k in kept if _near(k, cand, rules)), None)
        if twin is None:
            kept.append(cand)
        else:
            dropped.append({"theme": cand.theme, "reason": f"{reason} {twin.theme}"})
    return [k.theme for k in kept], dropped


def _near(a: Candidate, b: Candidate, rules: SelectRules) -> bool:
    """Whether two candidates' perceptual hashes are within the threshold that applies."""
    limit = rules.family_distance if a.family == b.family else rules.max_distance
    return hamming(a.render.phash, b.render.phash) <= limit


def assign_splits(
    names: Sequence[str], fractions: tuple[float, float, float], seed: int
) -> dict[str, str]:
    """Map each class to ``train``/``val``/``test``: a seeded shuffle cut at ``fractions``.

    The result depends only on the set of names, the fractions and the seed.
    """
    ordered = sorted(names)
    order = np.random.default_rng(seed).permutation(len(ordered))
    n_train = round(fractions[0] * len(ordered))
    n_val = round(fractions[1] * len(ordered))
    split = {}
    for rank, index in enumerate(order):
        split[ordered[int(index)]] = (
            "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
        )
    return split
