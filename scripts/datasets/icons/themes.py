"""Pinned icon themes, their ``index.theme`` directories, and the file each icon name uses.

This module is the single source of truth for which Debian packages (and which theme of
each) the icon benchmark is rendered from. Changing anything here changes the data, so bump
the dataset version when you do.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ICON_ROOT = Path("/usr/share/icons")
ICON_SUFFIXES = (".png", ".svg")


@dataclass(frozen=True)
class Theme:
    """One icon theme of one Debian package.

    Attributes:
        package: the Debian 12 (bookworm) package that ships it.
        directory: the theme's folder under ``/usr/share/icons``.
        licence: the artwork licence, as the package's ``copyright`` file states it for the
            icons (the file itself is hashed into the manifest).
        family: themes drawn from one another share a family; their near-duplicate
            designs are merged with a looser threshold (``SelectRules.family_distance``).
            Families come first in the list with their original theme, whose copy is kept.
    """

    package: str
    directory: str
    licence: str
    family: str


# Each package's themes of their own design (colour and dark variants left out); originals
# before the themes drawn from them. Families, with the evidence:
#   tango: gnome-colors-common's copyright says most of its icons derive from Tango.
#   gnome: MATE continues the GNOME 2 icons; Adwaita's full-colour icons continue
#     gnome-icon-theme's (many are near copies).
#   elementary: "elementary icon theme modified for Xfce" (package description).
#   faenza: "Intuitive Faenza-like icon theme" (Obsidian's package description).
#   snwh: Sam Hewitt's designs: Faba, Moka (inherits Faba), Paper; Mint-Y and Yaru name him
#     as a copyright holder of their icons.
#   papirus: deepin's bloom, bloom-classic and Vintage inherit Papirus and redraw its style.
#   nuovo: YASIS is by Nuovo's author; LXDE's nuoveXT2 (inheriting nuoveXT) joins on its name
#     and look alone, an assumption.
THEMES: tuple[Theme, ...] = (
    Theme("tango-icon-theme", "Tango", "public domain", "tango"),
    Theme("gnome-colors-common", "gnome-colors-common", "GPL-2", "tango"),
    Theme("gnome-icon-theme", "gnome", "GPL-2+", "gnome"),
    Theme("mate-icon-theme", "mate", "LGPL-3+ or CC-BY-SA", "gnome"),
    Theme("adwaita-icon-theme", "Adwaita", "CC-BY-SA-3.0 or LGPL-3", "gnome"),
    Theme("elementary-icon-theme", "elementary", "GPL-3+", "elementary"),
    Theme("elementary-xfce-icon-theme", "elementary-xfce", "GPL-2+", "elementary"),
    Theme("faenza-icon-theme", "Faenza", "GPL-3+", "faenza"),
    Theme("obsidian-icon-theme", "Obsidian", "GPL-3", "faenza"),
    Theme("faba-icon-theme", "Faba", "GPL-3 or CC-BY-SA-4.0", "snwh"),
    Theme("moka-icon-theme", "Moka", "CC-BY-SA-4.0 or GPL-3+", "snwh"),
    Theme("paper-icon-theme", "Paper", "CC-BY-SA-3.0 (builder.png CC-BY-SA-4.0)", "snwh"),
    Theme("mint-y-icons", "Mint-Y", "CC-BY-SA-4.0", "snwh"),
    Theme("yaru-theme-icon", "Yaru", "CC-BY-SA-4.0", "snwh"),
    Theme("papirus-icon-theme", "Papirus", "GPL-3", "papirus"),
    Theme("deepin-icon-theme", "bloom", "LGPL-3+", "papirus"),
    Theme("deepin-icon-theme", "bloom-classic", "LGPL-3+", "papirus"),
    Theme("deepin-icon-theme", "Vintage", "LGPL-3+", "papirus"),
    Theme("gnome-icon-theme-nuovo", "Nuovo", "GPL-2+", "nuovo"),
    Theme("gnome-icon-theme-yasis", "yasis", "GPL-2+", "nuovo"),
    Theme("lxde-icon-theme", "nuoveXT2", "LGPL-3+", "nuovo"),
    Theme("oxygen-icon-theme", "oxygen", "LGPL-3+", "oxygen"),
    Theme("breeze-icon-theme", "breeze", "LGPL-3+", "breeze"),
    Theme("numix-icon-theme", "Numix", "GPL-3+", "numix"),
    Theme("suru-icon-theme", "suru", "CC-BY-SA-3.0", "suru"),
    Theme("gnome-icon-theme-gartoon", "gartoon", "GPL-2+", "gartoon"),
    Theme("gnome-icon-theme-suede", "Suede", "GPL-2+", "suede"),
    Theme("sugar-icon-theme", "sugar", "LGPL-2+", "sugar"),
    Theme("gnome-accessibility-themes", "HighContrast", "LGPL-2.1+", "highcontrast"),
)  # fmt: skip

RASTERISER_PACKAGE = "librsvg2-bin"
"""Debian package of ``rsvg-convert``, which rasterises the SVG icons."""


def theme_packages(themes: Sequence[Theme] = THEMES) -> tuple[str, ...]:
    """The Debian packages to install: the themes' and the SVG rasteriser's, each once."""
    return (*dict.fromkeys(t.package for t in themes), RASTERISER_PACKAGE)


def apt_install_command(themes: Sequence[Theme] = THEMES) -> str:
    """The shell command that installs every package the renderer reads."""
    packages = " ".join(theme_packages(themes))
    return f"apt-get update && apt-get install -y --no-install-recommends {packages}"


class ThemeIndexError(ValueError):
    """An ``index.theme`` file is missing or lists no usable directory."""


@dataclass(frozen=True)
class IconDir:
    """One directory of a theme, as its ``index.theme`` section describes it.

    Attributes:
        path: relative to the theme folder, e.g. ``"48x48/apps"``.
        size: nominal size in pixels.
        kind: ``"fixed"``, ``"scalable"`` or ``"threshold"``.
        min_size: smallest size it serves (scalable), else ``size``.
        max_size: largest size it serves (scalable), else ``size``.
        threshold: size tolerance of a threshold directory.
        context: the section's ``Context`` (``"Devices"``, ``"Actions"``, ...).
    """

    path: str
    size: int
    kind: str
    min_size: int
    max_size: int
    threshold: int
    context: str

    def distance(self, target: int) -> int:
        """How far the directory is from serving ``target`` px (0: serves it exactly).

        The freedesktop icon theme specification's directory size distance at scale 1.
        """
        if self.kind == "scalable":
            low, high = self.min_size, self.max_size
        elif self.kind == "threshold":
            low, high = self.size - self.threshold, self.size + self.threshold
        else:
            low = high = self.size
        return max(low - target, target - high, 0)


def parse_index(text: str) -> list[IconDir]:
    """The scale-1 directories an ``index.theme`` text lists under ``Directories``.

    Sections without a ``Size`` or with a ``Scale`` other than 1 are skipped, as are
    ``ScaledDirectories`` (HiDPI copies).

    Raises:
        ThemeIndexError: if the text has no ``[Icon Theme]`` section.
    """
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text)
    except configparser.Error as error:
        raise ThemeIndexError(f"unreadable index.theme: {error}") from error
    if "Icon Theme" not in parser:
        raise ThemeIndexError("index.theme has no [Icon Theme] section")
    dirs: list[IconDir] = []
    for path in parser["Icon Theme"].get("Directories", "").split(","):
        path = path.strip()
        if not path or path not in parser:
            continue
        section = parser[path]
        try:
            size = int(section["Size"])
            scale = int(section.get("Scale", "1"))
            kind = section.get("Type", "Threshold").strip().lower()
            min_size = int(section.get("MinSize", str(size)))
            max_size = int(section.get("MaxSize", str(size)))
            threshold = int(section.get("Threshold", "2"))
        except (KeyError, ValueError):
            continue
        if scale != 1 or kind not in ("fixed", "scalable", "threshold"):
            continue
        if kind != "scalable":
            min_size = max_size = size
        context = section.get("Context", "").strip()
        dirs.append(IconDir(path, size, kind, min_size, max_size, threshold, context))
    return dirs


def read_index(theme_dir: Path) -> list[IconDir]:
    """The directories of the theme at ``theme_dir`` (see :func:`parse_index`).

    Raises:
        ThemeIndexError: if ``index.theme`` is missing, unreadable or lists no directory.
    """
    index = theme_dir / "index.theme"
    try:
        text = index.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise ThemeIndexError(f"{index} unreadable: {error}") from error
    dirs = parse_index(text)
    if not dirs:
        raise ThemeIndexError(f"{index} lists no scale-1 directory with a size")
    return dirs


@dataclass(frozen=True)
class IconFile:
    """The file a theme uses for one icon name at the requested size.

    Attributes:
        theme: the theme's folder name.
        name: the icon name (file name without its suffix).
        path: the file as the theme lists it, relative to ``/usr/share/icons``.
        target: the file it resolves to (symlinks followed), absolute.
        size: the nominal size of its directory.
        context: its directory's context.
    """

    theme: str
    name: str
    path: str
    target: str
    size: int
    context: str


def _rank(icon_dir: IconDir, suffix: str, target: int) -> tuple[int, int, int]:
    """Sort key of a candidate: nearest directory first, then the larger, then SVG."""
    return icon_dir.distance(target), -icon_dir.size, 0 if suffix == ".svg" else 1


def choose_files(
    theme: str, dirs: Iterable[IconDir], listing: Iterable[tuple[IconDir, str, str]], target: int
) -> dict[str, IconFile]:
    """For every icon name, the candidate file whose directory best serves ``target`` px.

    Args:
        theme: the theme's folder name.
        dirs: the theme's directories (for their order, which breaks remaining ties).
        listing: ``(directory, file name, resolved absolute path)`` of every icon file.
        target: the wanted size in pixels.

    Returns:
        icon name -> the chosen file.
    """
    order = {d.path: i for i, d in enumerate(dirs)}
    best: dict[str, tuple[tuple[int, int, int, int], IconFile]] = {}
    for icon_dir, file_name, resolved in listing:
        stem, suffix = os.path.splitext(file_name)
        key = (*_rank(icon_dir, suffix.lower(), target), order.get(icon_dir.path, len(order)))
        if stem not in best or key < best[stem][0]:
            relative = f"{theme}/{icon_dir.path}/{file_name}"
            best[stem] = (key, IconFile(theme, stem, relative, resolved, icon_dir.size,
                                        icon_dir.context))  # fmt: skip
    return {name: entry[1] for name, entry in sorted(best.items())}


def list_theme(
    theme_dir: Path, dirs: Sequence[IconDir], root: Path = ICON_ROOT
) -> list[tuple[IconDir, str, str]]:
    """``(directory, file name, resolved path)`` of every PNG/SVG icon of a theme.

    Broken symlinks and links that leave ``root`` are left out.
    """
    listing = []
    root = root.resolve()
    for icon_dir in dirs:
        folder = theme_dir / icon_dir.path
        if not folder.is_dir():
            continue
        for entry in sorted(os.listdir(folder)):
            if not entry.lower().endswith(ICON_SUFFIXES):
                continue
            resolved = (folder / entry).resolve()
            if resolved.is_file() and root in resolved.parents:
                listing.append((icon_dir, entry, str(resolved)))
    return listing


def theme_files(theme: Theme, target: int, root: Path = ICON_ROOT) -> dict[str, IconFile]:
    """Every icon name of ``theme`` and the file it uses at ``target`` px."""
    theme_dir = root / theme.directory
    dirs = read_index(theme_dir)
    return choose_files(theme.directory, dirs, list_theme(theme_dir, dirs, root), target)
