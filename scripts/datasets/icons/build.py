"""Assemble the icon benchmark: concepts, renders, designs, look-alikes, split, npz, manifest."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import PIL
from tqdm import tqdm

from scripts.datasets.glyphs_render.build import _npz_bytes as npz_bytes

from .concepts import Concept, ConceptRules, IconRef, build_concepts
from .dedup import phash
from .packages import PackageInfo
from .raster import RasterError, RenderParams, on_grey, rasterise, rejection, rsvg_convert
from .select import (
    Candidate,
    Rendered,
    SelectRules,
    assign_splits,
    select_designs,
    shared_drawings,
)
from .themes import ICON_ROOT, THEMES, IconFile, Theme, theme_files

log = logging.getLogger(__name__)

DATASET_NAME = "icons-v1"
DEFAULT_SEED = 20240616
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.64, 0.16, 0.20)
SPLIT_NAMES: tuple[str, str, str] = ("train", "val", "test")
SELECTION_SIZE = 32
"""Designs are judged (visibility, duplicates) on 32 px renders whatever the output size,
so a 64 px rendering holds the same classes and images as the shipped 32 px one."""

U8 = npt.NDArray[np.uint8]
_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True)
class Catalogue:
    """Every icon name of every theme, with the file it uses.

    Attributes:
        files: theme folder -> icon name -> the file chosen for it.
        digests: resolved file path -> SHA-256 of its content.
    """

    files: dict[str, dict[str, IconFile]]
    digests: dict[str, str]

    def refs(self) -> dict[str, dict[str, IconRef]]:
        """Theme -> icon name -> what it points at (content hash, name drawn as)."""
        return {
            theme: {
                name: IconRef(self.digests[f.target], Path(f.target).stem)
                for name, f in files.items()
            }
            for theme, files in self.files.items()
        }


@dataclass
class IconSet:
    """A rendered benchmark before it is written.

    Attributes:
        images: per split, uint8 (N, 3, S, S) on mid-grey, classes in manifest order and
            each class's images consecutive.
        labels: per split, int16 (N,) class index of each image.
        manifest: everything but the npz hash, JSON-ready.
    """

    images: dict[str, U8]
    labels: dict[str, npt.NDArray[np.int16]]
    manifest: dict[str, object]


def _sha256(path: str) -> str:
    """Hex SHA-256 of a file."""
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _pool_map(fn: Callable[[_T], _R], items: Sequence[_T], desc: str) -> list[_R]:
    """``[fn(x) for x in items]`` on one thread per core (rsvg-convert runs as a process)."""
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        return list(tqdm(pool.map(fn, items), total=len(items), desc=desc, leave=False))


def discover(
    themes: Sequence[Theme] = THEMES, source_size: int = 48, root: Path = ICON_ROOT
) -> Catalogue:
    """The icon names of ``themes`` and the file each uses at ``source_size`` px."""
    files = {theme.directory: theme_files(theme, source_size, root) for theme in themes}
    targets = sorted({f.target for names in files.values() for f in names.values()})
    log.info("hashing %d icon files of %d themes", len(targets), len(themes))
    digests = dict(zip(targets, _pool_map(_sha256, targets, "hashing"), strict=True))
    return Catalogue(files, digests)


def render_file(path: str, params: RenderParams) -> Rendered:
    """Rasterise one icon on mid-grey and judge it; an unreadable file is a rejection."""
    side = params.image_size
    try:
        rgba = rasterise(path, params)
    except RasterError as error:
        return Rendered(np.full((3, side, side), 128, np.uint8), 0, f"unreadable: {error}")
    image = on_grey(rgba)
    return Rendered(image, phash(image), rejection(rgba, image, params))


def _render_all(paths: Sequence[str], params: RenderParams) -> dict[str, Rendered]:
    """Path -> its render, for every path."""
    renders = _pool_map(lambda p: render_file(p, params), paths, f"rendering {params.image_size}px")
    return dict(zip(paths, renders, strict=True))


@dataclass(frozen=True)
class _Chosen:
    """A concept that made it into the benchmark, with its kept themes and drop records."""

    concept: Concept
    themes: list[str]
    dropped: list[dict[str, str]]


def _usable(
    concepts: Sequence[Concept], catalogue: Catalogue, renders: Mapping[str, Rendered]
) -> tuple[dict[str, dict[str, Rendered]], dict[str, list[dict[str, str]]]]:
    """Per concept, the usable renders by theme, and the records of the rejected ones."""
    usable: dict[str, dict[str, Rendered]] = {}
    rejected: dict[str, list[dict[str, str]]] = {}
    for concept in concepts:
        usable[concept.name], rejected[concept.name] = {}, []
        for theme, name in concept.designs.items():
            render = renders[catalogue.files[theme][name].target]
            if render.rejected is None:
                usable[concept.name][theme] = render
            else:
                rejected[concept.name].append({"theme": theme, "reason": render.rejected})
    return usable, rejected


def _choose(
    concepts: Sequence[Concept],
    catalogue: Catalogue,
    renders: Mapping[str, Rendered],
    themes: Sequence[Theme],
    rules: SelectRules,
) -> tuple[list[_Chosen], int]:
    """Concepts with at least ``min_designs`` distinct designs; and how many had fewer.

    Unusable renders go first, then drawings a theme uses for several concepts, then the
    near duplicates within each concept.
    """
    family = {t.directory: t.family for t in themes}
    usable, dropped = _usable(concepts, catalogue, renders)
    by_theme: dict[str, dict[str, U8]] = {t.directory: {} for t in themes}
    for name, renders_of in usable.items():
        for theme, render in renders_of.items():
            by_theme[theme][name] = render.image
    shared = shared_drawings(by_theme, rules.same_drawing_mad)
    chosen: list[_Chosen] = []
    too_few = 0
    for concept in concepts:
        candidates = []
        for theme, render in usable[concept.name].items():
            other = shared.get((theme, concept.name))
            if other is None:
                candidates.append(Candidate(theme, family[theme], render))
            else:
                dropped[concept.name].append({"theme": theme, "reason": f"same drawing as {other}"})
        kept, duplicates = select_designs(candidates, rules)
        if len(kept) >= rules.min_designs:
            chosen.append(_Chosen(concept, kept, dropped[concept.name] + duplicates))
        else:
            too_few += 1
    return chosen, too_few


def build_dataset(
    catalogue: Catalogue,
    packages: Mapping[str, PackageInfo],
    themes: Sequence[Theme] = THEMES,
    params: RenderParams | None = None,
    concept_rules: ConceptRules | None = None,
    select_rules: SelectRules | None = None,
    seed: int = DEFAULT_SEED,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> IconSet:
    """Render the benchmark from the installed themes in ``catalogue``.

    Raises:
        ValueError: if no concept has enough designs.
    """
    params = params or RenderParams()
    concept_rules = concept_rules or ConceptRules()
    select_rules = select_rules or SelectRules()
    concepts, concept_drops = build_concepts(catalogue.refs(), concept_rules)
    concepts = [c for c in concepts if len(c.designs) >= select_rules.min_designs]
    paths = sorted({catalogue.files[t][n].target for c in concepts for t, n in c.designs.items()})
    renders = _render_all(paths, replace(params, image_size=SELECTION_SIZE))
    chosen, too_few = _choose(concepts, catalogue, renders, themes, select_rules)
    if not chosen:
        raise ValueError("no icon concept has enough distinct designs; are the themes installed?")
    split_of = assign_splits([c.concept.name for c in chosen], fractions, seed)
    by_split = {
        s: sorted(
            (c for c in chosen if split_of[c.concept.name] == s), key=lambda c: c.concept.name
        )
        for s in SPLIT_NAMES
    }
    if params.image_size != SELECTION_SIZE:
        kept = sorted({catalogue.files[t][c.concept.designs[t]].target for c in chosen
                       for t in c.themes})  # fmt: skip
        renders = _render_all(kept, params)
    images, labels = {}, {}
    for split, members in by_split.items():
        stack = [
            renders[catalogue.files[t][c.concept.designs[t]].target].image
            for c in members
            for t in c.themes
        ]
        side = params.image_size
        images[split] = np.stack(stack) if stack else np.zeros((0, 3, side, side), np.uint8)
        counts = [len(c.themes) for c in members]
        labels[split] = np.repeat(np.arange(len(members), dtype=np.int16), counts)
    excluded = {
        "concepts_considered": len(concepts),
        "concepts_with_too_few_designs": too_few,
        "fallback_files_per_theme": dict(Counter(
            str(d["theme"]) for d in concept_drops if d["reason"] == "fallback"
        )),
        "designs_drawn_for_another_concept": sum(
            d["reason"] != "fallback" for d in concept_drops
        ),
    }  # fmt: skip
    manifest = _manifest(by_split, catalogue, packages, themes, params, concept_rules,
                         select_rules, seed, fractions, excluded)  # fmt: skip
    return IconSet(images, labels, manifest)


def _class_entry(chosen: _Chosen, catalogue: Catalogue, split: str) -> dict[str, object]:
    """The manifest entry of one class: aliases, images (theme, icon, file, hash), drops."""
    concept = chosen.concept
    images = []
    for theme in chosen.themes:
        icon = catalogue.files[theme][concept.designs[theme]]
        images.append([theme, icon.name, icon.path, catalogue.digests[icon.target]])
    return {
        "name": concept.name,
        "split": split,
        "aliases": [a for a in concept.aliases if a != concept.name],
        "images": images,
        "dropped": [[d["theme"], d["reason"]] for d in chosen.dropped],
    }


def _software() -> dict[str, str]:
    """Versions of what turned files into pixels."""
    version = "not installed"
    if shutil.which("rsvg-convert"):
        done = subprocess.run([rsvg_convert(), "--version"], capture_output=True, text=True,
                              check=False)  # fmt: skip
        version = done.stdout.strip()
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "rsvg-convert": version,
    }


def _manifest(
    by_split: Mapping[str, Sequence[_Chosen]],
    catalogue: Catalogue,
    packages: Mapping[str, PackageInfo],
    themes: Sequence[Theme],
    params: RenderParams,
    concept_rules: ConceptRules,
    select_rules: SelectRules,
    seed: int,
    fractions: tuple[float, float, float],
    excluded: Mapping[str, object],
) -> dict[str, object]:
    """The JSON manifest (without the npz hash, added when written)."""
    counts = {s: len(by_split[s]) for s in SPLIT_NAMES}
    total = max(sum(counts.values()), 1)
    per_theme = Counter(t for members in by_split.values() for c in members for t in c.themes)
    return {
        "name": DATASET_NAME,
        "description": (
            "Few-shot benchmark of real designer-drawn colour images: one class per "
            "freedesktop icon concept, one image per distinct icon-theme design, rendered "
            "from Debian's icon-theme packages."
        ),
        "pixels": {
            "dtype": "uint8",
            "shape": "(N, 3, image_size, image_size) per split, RGB",
            "background": "icons composited on mid-grey (128, 128, 128)",
        },
        "image_size": params.image_size,
        "seed": seed,
        "split_fractions_target": list(fractions),
        "split_class_counts": counts,
        "split_class_fractions": {s: round(c / total, 4) for s, c in counts.items()},
        "split_image_counts": {s: sum(len(c.themes) for c in by_split[s]) for s in SPLIT_NAMES},
        "render_params": params.to_dict(),
        "concept_rules": concept_rules.to_dict(),
        "select_rules": select_rules.to_dict(),
        "splits": {s: {"classes": [c.concept.name for c in by_split[s]]} for s in SPLIT_NAMES},
        "classes": [_class_entry(c, catalogue, s) for s in SPLIT_NAMES for c in by_split[s]],
        "excluded": dict(excluded),
        "themes": [
            {
                "directory": t.directory,
                "package": t.package,
                "licence": t.licence,
                "family": t.family,
                "images": per_theme.get(t.directory, 0),
            }
            for t in themes
        ],
        "packages": {name: info.manifest_entry() for name, info in sorted(packages.items())},
        "software": _software(),
    }


def write_dataset(icons: IconSet, npz_path: Path, manifest_path: Path) -> str:
    """Write the npz and the manifest (with the npz's SHA-256); return that hash."""
    arrays: dict[str, npt.NDArray[np.generic]] = {}
    for split in SPLIT_NAMES:
        arrays[split] = icons.images[split]
        arrays[f"{split}_labels"] = icons.labels[split]
    data = npz_bytes(arrays)
    digest = hashlib.sha256(data).hexdigest()
    npz_path.parent.mkdir(parents=True, exist_ok=True)
    npz_path.write_bytes(data)
    manifest = dict(icons.manifest)
    manifest["npz"] = {"file": npz_path.name, "sha256": digest, "bytes": len(data)}
    manifest_path.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    log.info("wrote %s (%.1f MB, sha256 %s) and %s", npz_path, len(data) / 1e6, digest[:12],
             manifest_path)  # fmt: skip
    return digest
