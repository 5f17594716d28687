"""Read a file one was pointed at: a regular file, and never more than a limit.

The edge runtime reads bundles, keys, certificates and images through it; the hub reads the
bundles it serves through it.

``Path.read_bytes`` trusts the path: a symlink to ``/dev/zero`` or ``/dev/urandom`` reads
until memory runs out (``stat`` reports size 0 for device files), and a named pipe blocks
until someone writes to it. :func:`read_regular_file` opens without blocking, checks with
``fstat`` on the open descriptor that it holds a regular file, and reads at most
``limit + 1`` bytes, so an oversized file is refused after a bounded read.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

__all__ = ["MissingFileError", "UnreadableFileError", "read_regular_file"]

_CHUNK_BYTES = 1 << 20
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO opens at once instead of waiting for a writer
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


class UnreadableFileError(ValueError):
    """A path is missing, not a regular file, unreadable or larger than allowed."""


class MissingFileError(UnreadableFileError):
    """Nothing exists at the path (or a directory on the way is missing)."""


def _kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _check_regular(path: Path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise UnreadableFileError(f"{path} is {_kind(mode)}, not a regular file")


def _refusal(path: Path, err: OSError) -> UnreadableFileError:
    if err.errno in (errno.ENOENT, errno.ENOTDIR):
        return MissingFileError(f"{path} is missing")
    return UnreadableFileError(f"cannot read {path}: {err.strerror or err}")


def _too_large(path: Path, limit: int) -> UnreadableFileError:
    return UnreadableFileError(f"{path} holds more than the {limit} bytes allowed")


def read_regular_file(path: str | Path, limit: int) -> bytes:
    """The bytes of the regular file at ``path`` (symlinks followed), at most ``limit`` of them.

    Raises:
        MissingFileError: nothing at ``path``.
        UnreadableFileError: ``path`` is a directory, device, FIFO, socket or symlink loop,
            cannot be opened or read, or holds more than ``limit`` bytes.
    """
    path = Path(path)
    try:
        # Refuse non-regular files before opening them: opening a device can have effects.
        _check_regular(path, os.stat(path).st_mode)
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as err:
        raise _refusal(path, err) from err
    try:
        opened = os.fstat(fd)  # what was opened, not what was stat'ed
        _check_regular(path, opened.st_mode)
        if opened.st_size > limit:
            raise _too_large(path, limit)
        # One read of the expected size (plus one byte, to see growth) keeps a single copy;
        # later reads only happen if the file grew since fstat.
        chunks: list[bytes] = []
        total, request = 0, opened.st_size + 1
        while total <= limit:
            chunk = os.read(fd, min(request, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total, request = total + len(chunk), _CHUNK_BYTES
    except OSError as err:
        raise _refusal(path, err) from err
    finally:
        os.close(fd)
    if total > limit:  # the file grew after fstat
        raise _too_large(path, limit)
    return b"".join(chunks)
