"""Assemble the glyph benchmark: designs, look-alikes, split, samples, npz and manifest."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import platform
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import PIL
from PIL import features
from tqdm import tqdm

from .alphabets import (
    ALPHABETS,
    FONT_PACKAGES,
    HOMOGLYPH_GROUP_SPLIT,
    HOMOGLYPH_GROUPS,
    PACKAGE_ONLY_FOR,
    Alphabet,
)
from .designs import AlphabetDesigns, Thresholds, find_designs
from .fonts import (
    FontFace,
    one_face_per_family,
    owning_packages,
    package_font_files,
    read_faces,
)
from .raster import U8, RenderParams, distort
from .split import SPLIT_NAMES, LookAlike, assign_splits, find_look_alikes

log = logging.getLogger(__name__)

DATASET_NAME = "glyphs-v1"
DEFAULT_SEED = 20240601
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.64, 0.16, 0.20)


@dataclass
class GlyphSet:
    """A rendered benchmark before it is written.

    Attributes:
        images: per split, uint8 (num_classes, images_per_class, S, S), ink high.
        designs: per split, int16 (num_classes, images_per_class): the index (into the
            alphabet's ``designs`` in the manifest) of the design each image was drawn from.
        manifest: everything but the npz hash, JSON-ready.
    """

    images: dict[str, U8]
    designs: dict[str, npt.NDArray[np.int16]]
    manifest: dict[str, object]


def discover_faces(packages: Sequence[str] = FONT_PACKAGES) -> list[FontFace]:
    """One face per font family among the files of the installed ``packages``."""
    files = package_font_files(packages)
    log.info("reading %d font files from %d packages", len(files), len(packages))
    faces = [
        face
        for package, version, path in tqdm(files, desc="fonts", unit="file", leave=False)
        for face in read_faces(path, package, version)
    ]
    kept = one_face_per_family(faces)
    log.info("%d faces, %d after keeping one per family", len(faces), len(kept))
    return kept


def _allowed(face: FontFace, alphabet: Alphabet) -> bool:
    """Whether a face may serve ``alphabet`` (see ``PACKAGE_ONLY_FOR``)."""
    only = PACKAGE_ONLY_FOR.get(face.package)
    return only is None or alphabet.name in only


def class_name(alphabet: str, code_point: int) -> str:
    """The class name of one letter, e.g. ``"hebrew/U+05D0"``."""
    return f"{alphabet}/U+{code_point:04X}"


def _sample_class(
    found: AlphabetDesigns, code_point: int, params: RenderParams, seed: int
) -> tuple[U8, npt.NDArray[np.int16]]:
    """Render one class: each distinct design once (random order), then random designs.

    Returns:
        images uint8 (images_per_class, S, S) and the design index of each.
    """
    rng = np.random.default_rng([seed, code_point])
    usable = [i for i, d in enumerate(found.designs) if code_point in d.bases]
    count = params.images_per_class
    order = rng.permutation(len(usable))
    if len(usable) < count:
        order = np.concatenate([order, rng.integers(0, len(usable), count - len(usable))])
    picks = [usable[int(i)] for i in order[:count]]
    images = np.stack([distort(found.designs[i].bases[code_point], rng, params) for i in picks])
    return images, np.asarray(picks, dtype=np.int16)


def _kept_letters(found: AlphabetDesigns, min_designs: int) -> list[int]:
    """Letters of the alphabet drawn by at least ``min_designs`` designs."""
    return [cp for cp in found.alphabet.letters if len(found.designs_for(cp)) >= min_designs]


def _find_all_designs(
    faces: Sequence[FontFace],
    alphabets: Sequence[Alphabet],
    params: RenderParams,
    thresholds: Thresholds,
) -> list[AlphabetDesigns]:
    """Designs of every alphabet that has at least ``min_designs`` of them."""
    found: list[AlphabetDesigns] = []
    for alphabet in tqdm(alphabets, desc="validating fonts", unit="alphabet"):
        usable = [face for face in faces if _allowed(face, alphabet)]
        result = find_designs(alphabet, usable, params, thresholds)
        if len(result.designs) >= thresholds.min_designs:
            found.append(result)
        else:
            log.warning("dropping %s: %d designs", alphabet.name, len(result.designs))
    return found


def _render_splits(
    found: Sequence[AlphabetDesigns],
    letters: Mapping[str, Sequence[int]],
    split_of: Mapping[str, str],
    params: RenderParams,
    seed: int,
) -> tuple[dict[str, U8], dict[str, npt.NDArray[np.int16]], dict[str, list[str]]]:
    """Samples, design indices and class names of every split, in pinned alphabet order."""
    images: dict[str, list[U8]] = {s: [] for s in SPLIT_NAMES}
    design_ids: dict[str, list[npt.NDArray[np.int16]]] = {s: [] for s in SPLIT_NAMES}
    classes: dict[str, list[str]] = {s: [] for s in SPLIT_NAMES}
    jobs = [(a, cp) for split in SPLIT_NAMES for a in found if split_of[a.alphabet.name] == split
            for cp in letters[a.alphabet.name]]  # fmt: skip
    for alphabet_designs, cp in tqdm(jobs, desc="rendering", unit="class"):
        split = split_of[alphabet_designs.alphabet.name]
        class_images, picks = _sample_class(alphabet_designs, cp, params, seed)
        images[split].append(class_images)
        design_ids[split].append(picks)
        classes[split].append(class_name(alphabet_designs.alphabet.name, cp))
    side, per_class = params.image_size, params.images_per_class
    stacked = {
        s: np.stack(images[s]) if images[s] else np.zeros((0, per_class, side, side), np.uint8)
        for s in SPLIT_NAMES
    }
    stacked_ids = {
        s: np.stack(design_ids[s]) if design_ids[s] else np.zeros((0, per_class), np.int16)
        for s in SPLIT_NAMES
    }
    return stacked, stacked_ids, classes


def build_dataset(
    faces: Sequence[FontFace],
    alphabets: Sequence[Alphabet] = ALPHABETS,
    params: RenderParams | None = None,
    thresholds: Thresholds | None = None,
    seed: int = DEFAULT_SEED,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> GlyphSet:
    """Render the benchmark from ``faces``: designs, look-alikes, split, then samples.

    Raises:
        ValueError: if no alphabet has enough designs.
    """
    params = params or RenderParams()
    thresholds = thresholds or Thresholds()
    found = _find_all_designs(faces, alphabets, params, thresholds)
    letters = {a.alphabet.name: _kept_letters(a, thresholds.min_designs) for a in found}
    look_alikes = find_look_alikes(found, letters, thresholds.homoglyph_iou)
    for pair in look_alikes:
        letters[pair.dropped_alphabet].remove(pair.dropped)
    found = [a for a in found if letters[a.alphabet.name]]
    if not found:
        raise ValueError("no alphabet has enough valid font designs; are the fonts installed?")
    counts = {a.alphabet.name: len(letters[a.alphabet.name]) for a in found}
    few_designs = [a.alphabet.name for a in found if len(a.designs) < thresholds.min_eval_designs]
    split_of = assign_splits(counts, fractions, seed, train_only=few_designs)
    images, design_ids, classes = _render_splits(found, letters, split_of, params, seed)
    manifest = _manifest(found, letters, look_alikes, split_of, classes, params, thresholds,
                         seed, fractions)  # fmt: skip
    return GlyphSet(images, design_ids, manifest)


def _font_entries(fonts: Sequence[FontFace]) -> list[dict[str, object]]:
    """Manifest entries of ``fonts``, with the owning package as ``dpkg -S`` reports it."""
    owners = owning_packages(face.path for face in fonts)
    entries = []
    for face in fonts:
        entry = face.manifest_entry()
        package, version = owners.get(face.path, (face.package, face.package_version))
        if package != face.package:
            log.warning("dpkg -S says %s belongs to %s, not %s", face.path, package, face.package)
        entry["package"], entry["package_version"] = package, version
        entries.append(entry)
    return entries


def _manifest(
    found: Sequence[AlphabetDesigns],
    letters: Mapping[str, Sequence[int]],
    look_alikes: Sequence[LookAlike],
    split_of: Mapping[str, str],
    classes: Mapping[str, Sequence[str]],
    params: RenderParams,
    thresholds: Thresholds,
    seed: int,
    fractions: tuple[float, float, float],
) -> dict[str, object]:
    """The JSON manifest (without the npz hash, added when written)."""
    fonts: list[FontFace] = sorted(
        {face.key: face for a in found for d in a.designs for face in d.faces}.values(),
        key=lambda f: (f.path, f.index),
    )
    font_id = {face.key: i for i, face in enumerate(fonts)}
    font_entries = _font_entries(fonts)
    alphabets = []
    for a in found:
        name = a.alphabet.name
        kept = set(letters[name])
        alphabets.append({
            "name": name,
            "split": split_of[name],
            "letters": [f"U+{cp:04X}" for cp in a.alphabet.letters],
            "text": "".join(chr(cp) for cp in a.alphabet.letters),
            "kept": [f"U+{cp:04X}" for cp in a.alphabet.letters if cp in kept],
            "designs": [
                {"fonts": [font_id[f.key] for f in d.faces], "letters_drawn": len(d.bases)}
                for d in a.designs
            ],
            "rejected_fonts": dict(sorted(a.rejected.items())),
        })  # fmt: skip
    total = sum(len(v) for v in classes.values())
    return {
        "name": DATASET_NAME,
        "description": (
            "Omniglot-like benchmark: letters of many alphabets typeset in distinct font "
            "designs with random affine and stroke-width distortions (not handwriting)."
        ),
        "pixels": {
            "dtype": "uint8",
            "shape": "(images_per_class, 1, image_size, image_size) per class",
            "ink": "high",
            "convention": "white ink on black: background 0, full ink 255",
        },
        "image_size": params.image_size,
        "images_per_class": params.images_per_class,
        "seed": seed,
        "split_fractions_target": list(fractions),
        "split_class_counts": {s: len(classes[s]) for s in SPLIT_NAMES},
        "split_class_fractions": {
            s: round(len(classes[s]) / max(total, 1), 4) for s in SPLIT_NAMES
        },
        "render_params": params.to_dict(),
        "thresholds": thresholds.to_dict(),
        "homoglyph_groups": {
            "groups": [list(g) for g in HOMOGLYPH_GROUPS],
            "split": HOMOGLYPH_GROUP_SPLIT,
        },  # fmt: skip
        "train_only_alphabets": [
            a.alphabet.name for a in found if len(a.designs) < thresholds.min_eval_designs
        ],
        "package_only_for": {k: list(v) for k, v in PACKAGE_ONLY_FOR.items()},
        "look_alike_rule": (
            f"cross-alphabet letter pairs whose IoU (32x32 masks grown by 1 px, median over up "
            f"to 5 fonts drawing both alphabets) exceeds {thresholds.homoglyph_iou}, plus pinned "
            "pairs (iou null); the letter of the later alphabet is dropped"
        ),
        "look_alikes_dropped": [p.to_dict() for p in look_alikes],
        "splits": {
            s: {
                "alphabets": [a.alphabet.name for a in found if split_of[a.alphabet.name] == s],
                "classes": list(classes[s]),
            }
            for s in SPLIT_NAMES
        },
        "alphabets": alphabets,
        "fonts": font_entries,
        "font_packages": dict(sorted((e["package"], e["package_version"]) for e in font_entries)),
        "software": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pillow": PIL.__version__,
            "freetype": features.version("freetype2"),
        },
    }


def _npz_bytes(arrays: Mapping[str, npt.NDArray[np.generic]]) -> bytes:
    """A compressed ``.npz`` with fixed timestamps, so equal arrays give equal bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def write_dataset(glyphs: GlyphSet, npz_path: Path, manifest_path: Path) -> str:
    """Write the npz and the manifest (with the npz's SHA-256); return that hash."""
    arrays: dict[str, npt.NDArray[np.generic]] = {}
    for split in SPLIT_NAMES:
        arrays[split] = glyphs.images[split]
        arrays[f"{split}_designs"] = glyphs.designs[split]
    data = _npz_bytes(arrays)
    digest = hashlib.sha256(data).hexdigest()
    npz_path.parent.mkdir(parents=True, exist_ok=True)
    npz_path.write_bytes(data)
    manifest = dict(glyphs.manifest)
    manifest["npz"] = {"file": npz_path.name, "sha256": digest, "bytes": len(data)}
    manifest_path.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    log.info("wrote %s (%.1f MB, sha256 %s) and %s", npz_path, len(data) / 1e6, digest[:12],
             manifest_path)  # fmt: skip
    return digest
