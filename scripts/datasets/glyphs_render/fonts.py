"""Find the font faces of the pinned Debian packages and read what they claim to cover."""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fontTools.ttLib import TTCollection, TTFont, TTLibError  # type: ignore[import-untyped]

from .alphabets import apt_install_command

log = logging.getLogger(__name__)

FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")
_REGULAR_STYLES = ("regular", "book", "roman", "normal", "medium", "plain")


class FontsMissingError(RuntimeError):
    """The font packages the renderer needs are not installed."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"{detail}\nInstall the fonts with:\n  {apt_install_command()}")


@dataclass(frozen=True)
class FontFace:
    """One face of one font file.

    Attributes:
        path: absolute path of the font file.
        index: face index inside the file (non-zero only for collections).
        package: Debian package that ships the file, ``"unknown"`` if none does.
        package_version: that package's installed version, ``""`` if unknown.
        family: typographic family name (name ID 16, else 1).
        style: subfamily name (name ID 17, else 2).
        sha256: hex SHA-256 of the whole file.
        cmap: the code points the face maps to a glyph.
    """

    path: str
    index: int
    package: str
    package_version: str
    family: str
    style: str
    sha256: str
    cmap: frozenset[int]

    @property
    def key(self) -> str:
        """Stable identifier of the face: ``path#index``."""
        return f"{self.path}#{self.index}"

    def manifest_entry(self) -> dict[str, object]:
        """What the dataset manifest records about the face."""
        return {
            "file": self.path,
            "face_index": self.index,
            "package": self.package,
            "package_version": self.package_version,
            "family": self.family,
            "style": self.style,
            "sha256": self.sha256,
        }


def _dpkg_query(args: Sequence[str]) -> str:
    """Run ``dpkg-query`` with ``args``; raise :class:`FontsMissingError` without dpkg."""
    if shutil.which("dpkg-query") is None:
        raise FontsMissingError("dpkg-query not found: the renderer needs a Debian system")
    done = subprocess.run(["dpkg-query", *args], capture_output=True, text=True, check=False)
    return done.stdout


def package_font_files(packages: Sequence[str]) -> list[tuple[str, str, str]]:
    """``(package, version, path)`` of every font file the installed ``packages`` ship.

    Raises:
        FontsMissingError: if any of ``packages`` is not installed.
    """
    fmt = "${Package}\t${Version}\t${db:Status-Abbrev}\t${db-fsys:Files}\n"
    out = _dpkg_query(["-W", f"-f={fmt}", *packages])
    files: list[tuple[str, str, str]] = []
    installed: set[str] = set()
    package, version = "", ""
    for line in out.splitlines():
        if "\t" in line:
            package, version, status, line = line.split("\t", 3)
            if status.startswith("ii"):
                installed.add(package)
        path = line.strip()
        if package in installed and path.lower().endswith(FONT_SUFFIXES) and Path(path).is_file():
            files.append((package, version, path))
    missing = sorted(set(packages) - installed)
    if missing:
        raise FontsMissingError(f"{len(missing)} font packages not installed: {' '.join(missing)}")
    return sorted(files, key=lambda item: item[2])


def owning_packages(paths: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Map each path to ``(package, version)`` with ``dpkg -S``; unknown paths are left out."""
    paths = list(paths)
    if not paths or shutil.which("dpkg") is None:
        return {}
    done = subprocess.run(["dpkg", "-S", *paths], capture_output=True, text=True, check=False)
    owners: dict[str, str] = {}
    for line in done.stdout.splitlines():
        package, _, path = line.partition(": ")
        owners[path.strip()] = package.split(",")[0].split(":")[0].strip()
    versions: dict[str, str] = {}
    if owners:
        out = _dpkg_query(["-W", "-f=${Package}\t${Version}\n", *sorted(set(owners.values()))])
        versions = dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)
    return {path: (pkg, versions.get(pkg, "")) for path, pkg in owners.items()}


def _sha256(path: str) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _names(font: TTFont) -> tuple[str, str]:
    """``(family, style)`` of a face, preferring the typographic names."""
    table = font["name"]
    family = table.getDebugName(16) or table.getDebugName(1) or "?"
    style = table.getDebugName(17) or table.getDebugName(2) or "?"
    return family, style


def read_faces(path: str, package: str, version: str) -> list[FontFace]:
    """Every face of the font file at ``path``; an unreadable file gives none (logged)."""
    try:
        if path.lower().endswith((".ttc", ".otc")):
            fonts = list(TTCollection(path, lazy=True).fonts)
        else:
            fonts = [TTFont(path, lazy=True)]
        sha = _sha256(path)
        faces = []
        for index, font in enumerate(fonts):
            family, style = _names(font)
            # Placeholder glyph names: decoding the cmap then skips the 'post' table.
            font.setGlyphOrder([f"g{gid}" for gid in range(font["maxp"].numGlyphs)])
            cmap = frozenset((font.getBestCmap() or {}).keys())
            faces.append(FontFace(path, index, package, version, family, style, sha, cmap))
        return faces
    except (TTLibError, OSError, KeyError, AssertionError, ValueError) as error:
        log.warning("skipping unreadable font %s: %s", path, error)
        return []


def _style_rank(style: str) -> int:
    """0 for an upright regular style, 1 for anything else (bold, italic, light, ...)."""
    return 0 if style.strip().lower() in _REGULAR_STYLES else 1


def one_face_per_family(faces: Sequence[FontFace]) -> list[FontFace]:
    """Keep one face per family (its regular, else the first by path) and one per file hash.

    Weights and slants of one family are near-identical after the stroke-width distortion,
    so they would count as one design anyway; keeping one saves most of the render time.
    """
    best: dict[str, FontFace] = {}
    for face in sorted(faces, key=lambda f: (_style_rank(f.style), f.path, f.index)):
        best.setdefault(face.family.lower(), face)
    seen: set[tuple[str, int]] = set()
    kept = []
    for face in sorted(best.values(), key=lambda f: (f.path, f.index)):
        if (face.sha256, face.index) not in seen:
            seen.add((face.sha256, face.index))
            kept.append(face)
    return kept
