"""Layout checks shared by the dataset loaders: every error shows what was expected and found.

A loader describes its on-disk layout once, as a small text tree, and raises every
:class:`~free_common.data.base.DatasetError` through :func:`layout_error`, so a user who
points at the wrong folder sees the tree the loader wanted next to a listing of what is
actually there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from free_common.data.base import SPLITS, DatasetError
from free_common.data.image_io import Box, decode_images

_MAX_ENTRIES = 8


@dataclass(frozen=True)
class Layout:
    """The on-disk layout a loader expects.

    Attributes:
        dataset: registry name of the dataset, e.g. ``"cifar-fs"``; prefixes every message.
        tree: the expected layout as an indented text tree rooted at ``<root>/``.
    """

    dataset: str
    tree: str

    def error(self, problem: str, root: Path) -> DatasetError:
        """An error that states ``problem``, the expected tree and what exists under ``root``."""
        return layout_error(self.dataset, problem, self.tree, root)

    def require_dir(self, path: Path, root: Path) -> Path:
        """Return ``path`` if it is a directory, else raise a layout error."""
        if not path.is_dir():
            raise self.error(f"missing directory {path}", root)
        return path

    def require_file(self, path: Path, root: Path) -> Path:
        """Return ``path`` if it is a regular file, else raise a layout error."""
        if not path.is_file():
            raise self.error(f"missing file {path}", root)
        return path

    def read_lines(self, path: Path, root: Path) -> list[str]:
        """Non-empty, stripped lines of a UTF-8 text file that must exist."""
        self.require_file(path, root)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise self.error(f"cannot read {path} as UTF-8 text: {err}", root) from err
        return [line.strip() for line in text.splitlines() if line.strip()]

    def check_split(self, split: str, allowed: tuple[str, ...] = SPLITS) -> str:
        """Return ``split`` if it is one of ``allowed``, else raise :class:`DatasetError`."""
        if split not in allowed:
            raise DatasetError(
                f"{self.dataset}: unknown split {split!r}; expected one of "
                f"{', '.join(allowed)}\nexpected layout:\n{_indent(self.tree)}"
            )
        return split

    def decode(
        self,
        root: Path,
        paths: list[Path],
        image_size: int,
        channels: int,
        *,
        boxes: list[Box] | None = None,
        workers: int | None = None,
    ) -> npt.NDArray[np.uint8]:
        """:func:`~free_common.data.image_io.decode_images`, failing with a layout error.

        Returns:
            uint8 array of shape (len(paths), channels, image_size, image_size).
        """
        try:
            return decode_images(paths, image_size, channels, boxes=boxes, workers=workers)
        except DatasetError as err:
            raise self.error(str(err), root) from err


def layout_error(dataset: str, problem: str, expected: str, root: Path) -> DatasetError:
    """Build a :class:`DatasetError` naming the problem, the expected tree and what was found.

    Args:
        dataset: registry name of the dataset.
        problem: one line saying what is wrong (missing file, bad row, ...).
        expected: the expected layout as an indented text tree.
        root: the folder the user pointed at; its top two levels are listed.
    """
    return DatasetError(
        f"{dataset}: {problem}\n"
        f"expected layout:\n{_indent(expected)}\n"
        f"found under {root}:\n{_indent(describe_found(root))}"
    )


def describe_found(root: Path, *, depth: int = 2, max_entries: int = _MAX_ENTRIES) -> str:
    """A short listing of ``root``: folders first, at most ``max_entries`` per folder.

    Args:
        root: folder to list; when missing, the nearest existing parent is named instead.
        depth: how many levels to descend.
        max_entries: entries shown per folder before ``... and N more``.
    """
    if not root.exists():
        parent = next((p for p in root.parents if p.exists()), None)
        return f"(nothing: {root} does not exist; nearest existing parent: {parent})"
    if not root.is_dir():
        return f"(a file, not a folder: {root.name}, {_size(root)})"
    lines = _list_dir(root, depth, max_entries, "")
    return "\n".join(lines) if lines else "(empty folder)"


def _list_dir(folder: Path, depth: int, max_entries: int, prefix: str) -> list[str]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: (not e.is_dir(), e.name))
    except OSError as err:
        return [f"{prefix}(cannot list: {err.strerror})"]
    lines: list[str] = []
    for entry in entries[:max_entries]:
        if entry.is_dir():
            lines.append(f"{prefix}{entry.name}/")
            if depth > 1:
                lines.extend(_list_dir(Path(entry.path), depth - 1, max_entries, prefix + "  "))
        else:
            lines.append(f"{prefix}{entry.name} ({_size(Path(entry.path))})")
    if len(entries) > max_entries:
        lines.append(f"{prefix}... and {len(entries) - max_entries} more")
    return lines


def _size(path: Path) -> str:
    try:
        size = float(path.stat().st_size)
    except OSError:
        return "unreadable"
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
