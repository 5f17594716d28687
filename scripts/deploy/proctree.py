"""Stop processes by PID together with every descendant (read from /proc).

Flower's SuperExec starts its own session and Ray starts its own daemons below it, so a
process group does not cover everything a SuperLink or SuperNode spawns; walking the
parent links does.

Usage: ``python -m scripts.deploy.proctree PID [PID ...]`` (SIGTERM, then SIGKILL after 10 s).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

__all__ = ["descendants", "stop_pids"]


def descendants(pid: int) -> list[int]:
    """PIDs of every descendant of ``pid``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    stack = list(children.get(pid, []))
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(children.get(p, []))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def stop_pids(pids: list[int], timeout: float = 10.0) -> list[int]:
    """SIGTERM each PID and its descendants; SIGKILL what is left after ``timeout``.

    Returns:
        Every PID that was signalled.
    """
    tree = [q for p in pids for q in (p, *descendants(p))]
    for pid in tree:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in tree):
        time.sleep(0.2)
    late = [q for p in pids for q in descendants(p)]
    for pid in [*tree, *late]:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    return sorted(set(tree + late))


def main(argv: list[str] | None = None) -> int:
    pids = [int(a) for a in (argv if argv is not None else sys.argv[1:])]
    stopped = stop_pids(pids)
    print(f"stopped {len(stopped)} processes: {' '.join(map(str, stopped))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
