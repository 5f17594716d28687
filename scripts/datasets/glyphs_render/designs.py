"""Validate the fonts of one alphabet and merge near-identical ones into distinct designs.

A face is kept for an alphabet only if it draws at least ``coverage_min`` of the letters
(non-empty, not the face's .notdef box), its drawings are mostly distinct (placeholder
glyphs are not), and its letters are legible: each is nearest to the consensus of the
other fonts for the same letter often enough (fonts that map a script to glyphs of another
fail this). Faces whose letters overlap with a mean IoU above ``merge_iou`` are one design.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .alphabets import Alphabet
from .fonts import FontFace
from .raster import U8, RenderParams, binary_mask, render_base

log = logging.getLogger(__name__)

# A code point no font maps (plane-16 private use): drawing it gives the face's .notdef.
_NOTDEF_PROBE = 0x10FFFD


@dataclass(frozen=True)
class Thresholds:
    """Font validation, merging and look-alike thresholds; recorded in the manifest.

    Attributes:
        coverage_min: fraction of an alphabet's letters a face must draw (distinctly).
        distinct_min: fraction of a face's drawings that must differ from each other.
        legibility_min: fraction of a face's letters that must be nearest to the other
            faces' consensus drawing of the same letter.
        merge_iou: faces with a mean glyph IoU above this are one design.
        min_designs: letters (and alphabets) with fewer designs are dropped.
        min_eval_designs: alphabets with fewer designs go to meta-train, so that the
            meta-val and meta-test alphabets are drawn in many designs.
        homoglyph_iou: cross-alphabet letter pairs above this IoU are look-alikes; the
            letter of the later alphabet (in the pinned order) is dropped.
    """

    coverage_min: float = 0.9
    distinct_min: float = 0.85
    legibility_min: float = 0.5
    merge_iou: float = 0.8
    min_designs: int = 4
    min_eval_designs: int = 10
    homoglyph_iou: float = 0.85

    def to_dict(self) -> dict[str, float]:
        """JSON-ready copy."""
        return dict(self.__dict__)


@dataclass
class Design:
    """Faces of one alphabet that draw it alike.

    ``faces[0]`` is the representative every sample is rendered from; only for a letter it
    lacks does the next face of the design that draws the letter stand in.
    """

    faces: list[FontFace]
    bases: dict[int, U8] = field(default_factory=dict)

    @property
    def representative(self) -> FontFace:
        """The face samples of this design are rendered from."""
        return self.faces[0]


@dataclass
class AlphabetDesigns:
    """The distinct designs found for one alphabet, and why other faces were rejected.

    ``masks`` maps each valid face's key to ``(present (n,), masks (n, S*S))`` over the
    alphabet's letters, for the cross-alphabet look-alike check.
    """

    alphabet: Alphabet
    designs: list[Design]
    rejected: dict[str, str]
    masks: dict[str, tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]]

    def designs_for(self, code_point: int) -> list[Design]:
        """Designs that draw ``code_point``, in design order."""
        return [d for d in self.designs if code_point in d.bases]


@dataclass
class _Candidate:
    """A face being validated: its normalised glyphs and their masks (n_letters, S*S)."""

    face: FontFace
    bases: dict[int, U8]
    masks: npt.NDArray[np.bool_]
    present: npt.NDArray[np.bool_]
    drawn: int
    legibility: float = 0.0


def _render_candidate(face: FontFace, alphabet: Alphabet, params: RenderParams) -> _Candidate:
    """Render every letter the face claims, leaving out empty and placeholder drawings.

    A placeholder is the face's .notdef glyph, or a drawing the face repeats for two or
    more letters (boxes that CJK fonts map to characters they lack).
    """
    letters = alphabet.letters
    notdef = render_base(face.path, face.index, _NOTDEF_PROBE, params)
    drawn: dict[int, U8] = {}
    for cp in letters:
        if cp in face.cmap:
            base = render_base(face.path, face.index, cp, params)
            if base is not None and (notdef is None or not np.array_equal(base, notdef)):
                drawn[cp] = base
    repeats = Counter(base.tobytes() for base in drawn.values())
    bases = {cp: base for cp, base in drawn.items() if repeats[base.tobytes()] == 1}
    side = params.image_size
    masks = np.zeros((len(letters), side * side), dtype=bool)
    present = np.zeros(len(letters), dtype=bool)
    for i, cp in enumerate(letters):
        if cp in bases:
            masks[i] = binary_mask(bases[cp], params).reshape(-1)
            present[i] = True
    return _Candidate(face, bases, masks, present, len(drawn))


def _legibility(candidates: Sequence[_Candidate]) -> npt.NDArray[np.float64]:
    """Per face, the fraction of its letters nearest to the other faces' consensus glyph."""
    masks = np.stack([c.masks for c in candidates]).astype(np.float32)  # (F, n, D)
    present = np.stack([c.present for c in candidates])  # (F, n)
    total, count = masks.sum(axis=0), present.sum(axis=0).astype(np.float32)  # (n, D), (n,)
    scores = np.zeros(len(candidates), dtype=np.float64)
    for f, cand in enumerate(candidates):
        others = count - cand.present
        usable = others > 0
        if not usable.any() or not cand.present.any():
            continue
        consensus = (total - masks[f]) / np.maximum(others, 1)[:, None]  # leave-one-out
        consensus[~usable] = np.inf
        rows = np.flatnonzero(cand.present & usable)
        mine = masks[f, rows]  # (r, D)
        dist = ((mine[:, None, :] - consensus[None, :, :]) ** 2).sum(axis=-1)  # (r, n)
        dist[:, ~usable] = np.inf
        scores[f] = float((dist.argmin(axis=1) == rows).mean())
    return scores


def _pairwise_iou(candidates: Sequence[_Candidate]) -> npt.NDArray[np.float64]:
    """Mean IoU over shared letters between every two faces, (F, F); 0 with none shared."""
    masks = np.stack([c.masks for c in candidates]).astype(np.float32)  # (F, n, D)
    present = np.stack([c.present for c in candidates]).astype(np.float32)  # (F, n)
    n_faces, n_letters = present.shape
    iou_sum = np.zeros((n_faces, n_faces), dtype=np.float64)
    for letter in range(n_letters):
        m = masks[:, letter]
        inter = m @ m.T
        area = m.sum(axis=1)
        union = area[:, None] + area[None, :] - inter
        both = np.outer(present[:, letter], present[:, letter])
        iou_sum += np.where(union > 0, inter / np.maximum(union, 1.0), 0.0) * both
    shared = present @ present.T
    return np.where(shared > 0, iou_sum / np.maximum(shared, 1.0), 0.0)


def find_designs(
    alphabet: Alphabet,
    faces: Sequence[FontFace],
    params: RenderParams,
    thresholds: Thresholds,
) -> AlphabetDesigns:
    """Validate ``faces`` for ``alphabet`` and group the survivors into distinct designs.

    Designs are ordered by their representative's legibility (best first), then by path;
    the representative of a design is its most legible face.
    """
    n_letters = len(alphabet.letters)
    rejected: dict[str, str] = {}
    candidates: list[_Candidate] = []
    for face in faces:
        claimed = sum(cp in face.cmap for cp in alphabet.letters)
        if claimed < thresholds.coverage_min * n_letters:
            continue  # does not claim the alphabet: not a candidate at all
        cand = _render_candidate(face, alphabet, params)
        distinct = int(cand.present.sum())
        if cand.drawn < thresholds.coverage_min * n_letters:
            rejected[face.key] = f"draws {cand.drawn}/{n_letters} letters"
        elif distinct < thresholds.distinct_min * cand.drawn:
            rejected[face.key] = f"only {distinct}/{cand.drawn} distinct drawings"
        elif distinct < thresholds.coverage_min * n_letters:
            rejected[face.key] = f"draws {distinct}/{n_letters} letters distinctly"
        else:
            candidates.append(cand)
    if candidates:
        for cand, score in zip(candidates, _legibility(candidates), strict=True):
            cand.legibility = float(score)
        legible = [c for c in candidates if c.legibility >= thresholds.legibility_min]
        for cand in candidates:
            if cand.legibility < thresholds.legibility_min:
                rejected[cand.face.key] = f"legibility {cand.legibility:.2f}"
        candidates = legible
    candidates.sort(key=lambda c: (-c.legibility, c.face.path, c.face.index))
    designs = _merge(candidates, thresholds.merge_iou) if candidates else []
    log.info(
        "%s: %d designs from %d valid faces (%d rejected)",
        alphabet.name, len(designs), len(candidates), len(rejected),
    )  # fmt: skip
    masks = {c.face.key: (c.present, c.masks) for c in candidates}
    return AlphabetDesigns(alphabet, designs, rejected, masks)


def _merge(candidates: Sequence[_Candidate], merge_iou: float) -> list[Design]:
    """Greedy clustering: a face joins the first design whose representative it matches."""
    iou = _pairwise_iou(candidates)
    leaders: list[int] = []
    groups: list[list[int]] = []
    for i in range(len(candidates)):
        for leader, group in zip(leaders, groups, strict=True):
            if iou[i, leader] > merge_iou:
                group.append(i)
                break
        else:
            leaders.append(i)
            groups.append([i])
    designs = []
    for group in groups:
        design = Design([candidates[i].face for i in group])
        for i in group:  # the representative first; other members fill its gaps
            for cp, base in candidates[i].bases.items():
                design.bases.setdefault(cp, base)
        designs.append(design)
    return designs
