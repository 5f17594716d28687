"""Drop cross-alphabet look-alike letters and split the alphabets into meta-splits."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .alphabets import HOMOGLYPH_GROUP_SPLIT, HOMOGLYPH_GROUPS, PINNED_LOOK_ALIKES
from .designs import AlphabetDesigns

log = logging.getLogger(__name__)

SPLIT_NAMES: tuple[str, str, str] = ("train", "val", "test")
_SHARED_FACES = 5  # faces compared per alphabet pair (median IoU over them)
_SPLIT_TRIALS = 20000


@dataclass(frozen=True)
class LookAlike:
    """A cross-alphabet pair of letters drawn alike; ``dropped`` is removed from the data."""

    kept_alphabet: str
    kept: int
    dropped_alphabet: str
    dropped: int
    iou: float | None  # None for a pinned pair

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form with hex code points."""
        return {
            "kept": f"{self.kept_alphabet}/U+{self.kept:04X}",
            "dropped": f"{self.dropped_alphabet}/U+{self.dropped:04X}",
            "iou": None if self.iou is None else round(self.iou, 3),
        }


def _dilate(masks: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Grow square masks (n, S*S) by one pixel (3x3 max filter)."""
    side = int(round(masks.shape[1] ** 0.5))
    square = masks.reshape(-1, side, side)
    padded = np.pad(square, ((0, 0), (1, 1), (1, 1)))
    grown = np.zeros_like(square)
    for dy in range(3):
        for dx in range(3):
            grown |= padded[:, dy : dy + side, dx : dx + side]
    return grown.reshape(masks.shape)


def _iou_matrix(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """IoU between every row of ``a`` (m, D) and of ``b`` (n, D); (m, n)."""
    fa, fb = a.astype(np.float32), b.astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1.0), 0.0).astype(np.float64)


class _GrownMasks:
    """Per alphabet and face, the letter masks grown by one pixel (computed once).

    Comparing grown masks makes the IoU stroke-tolerant: thin strokes one pixel apart (the
    same shape drawn at slightly different proportions) still overlap.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], npt.NDArray[np.bool_]] = {}

    def get(self, found: AlphabetDesigns, key: str) -> npt.NDArray[np.bool_]:
        """Grown masks (n_letters, S*S) of face ``key`` for ``found``'s alphabet."""
        slot = (found.alphabet.name, key)
        if slot not in self._cache:
            self._cache[slot] = _dilate(found.masks[key][1])
        return self._cache[slot]


def _pair_iou(
    first: AlphabetDesigns, second: AlphabetDesigns, grown: _GrownMasks
) -> npt.NDArray[np.float64]:
    """Letter-by-letter stroke-tolerant IoU between two alphabets, (n_first, n_second).

    The median over up to five faces valid for both alphabets (so both are drawn in one
    design); without a shared face, the two alphabets' first designs are compared.
    """
    shared = sorted(set(first.masks) & set(second.masks))[:_SHARED_FACES]
    if not shared:
        key_a, key_b = first.designs[0].representative.key, second.designs[0].representative.key
        iou = _iou_matrix(grown.get(first, key_a), grown.get(second, key_b))
        iou[~first.masks[key_a][0], :] = 0.0
        iou[:, ~second.masks[key_b][0]] = 0.0
        return iou
    stack = []
    for key in shared:
        iou = _iou_matrix(grown.get(first, key), grown.get(second, key))
        iou[~np.outer(first.masks[key][0], second.masks[key][0])] = np.nan
        stack.append(iou)
    values = np.stack(stack)
    all_nan = np.isnan(values).all(axis=0)
    values[:, all_nan] = 0.0
    return np.asarray(np.nanmedian(values, axis=0), dtype=np.float64)


def find_look_alikes(
    found: Sequence[AlphabetDesigns], letters: Mapping[str, Sequence[int]], threshold: float
) -> list[LookAlike]:
    """Cross-alphabet pairs above ``threshold`` stroke-tolerant IoU, among kept letters.

    Alphabets are compared in the given order; the later alphabet's letter is the one
    dropped, and a dropped letter is not compared again. The pinned pairs of
    ``PINNED_LOOK_ALIKES`` are added last.
    """
    dropped: dict[str, set[int]] = {a.alphabet.name: set() for a in found}
    pairs: list[LookAlike] = []
    grown = _GrownMasks()
    for i, first in enumerate(found):
        for second in found[i + 1 :]:
            iou = _pair_iou(first, second, grown)
            for r, c in zip(*np.nonzero(iou > threshold), strict=True):
                kept_cp, drop_cp = first.alphabet.letters[r], second.alphabet.letters[c]
                name_a, name_b = first.alphabet.name, second.alphabet.name
                if kept_cp not in letters[name_a] or drop_cp not in letters[name_b]:
                    continue
                if kept_cp in dropped[name_a] or drop_cp in dropped[name_b]:
                    continue
                dropped[name_b].add(drop_cp)
                pairs.append(LookAlike(name_a, kept_cp, name_b, drop_cp, float(iou[r, c])))
    for (name_a, kept_cp), (name_b, drop_cp) in PINNED_LOOK_ALIKES:
        if name_a not in letters or name_b not in letters:
            continue
        if kept_cp in set(letters[name_a]) - dropped[name_a] and drop_cp in (
            set(letters[name_b]) - dropped[name_b]
        ):
            dropped[name_b].add(drop_cp)
            pairs.append(LookAlike(name_a, kept_cp, name_b, drop_cp, None))
    log.info("%d cross-alphabet look-alike letters dropped", len(pairs))
    return pairs


def assign_splits(
    class_counts: Mapping[str, int],
    fractions: tuple[float, float, float],
    seed: int,
    train_only: Sequence[str] = (),
) -> dict[str, str]:
    """Map each alphabet to train/val/test so the class counts approach ``fractions``.

    The alphabets of a homoglyph group travel together and go to the pinned side, those in
    ``train_only`` go to train; the others are assigned by the best of many seeded random
    draws (squared error between each split's class share and its target).
    """
    forced = {
        name: HOMOGLYPH_GROUP_SPLIT
        for group in HOMOGLYPH_GROUPS
        for name in group
        if name in class_counts
    }
    forced.update({name: "train" for name in train_only if name in class_counts})
    free = [name for name in class_counts if name not in forced]
    sizes = np.array([class_counts[name] for name in free], dtype=np.float64)
    base = np.zeros(3)
    for name, split in forced.items():
        base[SPLIT_NAMES.index(split)] += class_counts[name]
    total = base.sum() + sizes.sum()
    target = np.asarray(fractions, dtype=np.float64) * total
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, 3, size=(_SPLIT_TRIALS, len(free)))
    counts = base + np.stack([(draws == s) @ sizes for s in range(3)], axis=1)
    cost = (((counts - target) / max(total, 1.0)) ** 2).sum(axis=1)
    best = draws[int(np.argmin(cost))] if len(free) else np.zeros(0, dtype=np.int64)
    assignment = dict(forced)
    assignment.update({name: SPLIT_NAMES[int(s)] for name, s in zip(free, best, strict=True)})
    return {name: assignment[name] for name in class_counts}
