"""Perceptual hashes of rendered icons, and near-duplicate removal across themes.

Derived themes (Obsidian from Faenza, Moka from Faba, ...) often keep their parent's drawing
with new colours or small edits. Such a copy is not a new design: within a class, an image
whose perceptual hash is within ``max_distance`` bits of an earlier theme's image is dropped.
The hash is the classic DCT hash: the sign of the 8x8 lowest-frequency DCT coefficients of
the 32x32 luma (against their median), 64 bits.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]

_HASH_SIDE = 32
_LOW = 8


@lru_cache(maxsize=1)
def _dct_matrix(n: int) -> npt.NDArray[np.float64]:
    """Orthonormal DCT-II matrix (n, n): row k is the k-th cosine basis vector."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    basis: npt.NDArray[np.float64] = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    basis[0] /= np.sqrt(2.0)
    return basis


def _luma(image: U8) -> npt.NDArray[np.float64]:
    """ITU-R 601 luma of a (3, S, S) uint8 image, resampled to 32x32 by block means."""
    pixels = image.astype(np.float64)
    grey: npt.NDArray[np.float64] = 0.299 * pixels[0] + 0.587 * pixels[1] + 0.114 * pixels[2]
    side = grey.shape[0]
    if side % _HASH_SIDE:
        raise ValueError(f"image side {side} is not a multiple of {_HASH_SIDE}")
    f = side // _HASH_SIDE
    blocks: npt.NDArray[np.float64] = grey.reshape(_HASH_SIDE, f, _HASH_SIDE, f).mean(axis=(1, 3))
    return blocks


def phash(image: U8) -> int:
    """64-bit DCT perceptual hash of a (3, S, S) uint8 image (S a multiple of 32)."""
    dct = _dct_matrix(_HASH_SIDE)
    coefficients = (dct @ _luma(image) @ dct.T)[:_LOW, :_LOW].reshape(-1)
    bits = coefficients > np.median(coefficients[1:])  # the DC term would skew the median
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return (a ^ b).bit_count()


def keep_distinct(hashes: Sequence[int], max_distance: int) -> list[int]:
    """Indices of the images to keep: each is farther than ``max_distance`` from every kept one.

    Images are visited in the given order (themes' pinned order, parents first), so the
    first of a group of near-duplicates is the one kept.
    """
    kept: list[int] = []
    for i, h in enumerate(hashes):
        if all(hamming(h, hashes[j]) > max_distance for j in kept):
            kept.append(i)
    return kept
