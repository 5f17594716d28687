"""Create (once) and print the project's virtual environment, cached outside the clone.

The environment lives in ``$FREEFED_CACHE`` (default ``~/.cache/free-fed``) under a folder
named by a hash of the Python version, the pins in ``pyproject.toml`` and the lock file, so a
second run (or a second clone) reuses it and a change of pins builds a new one. Uses only the
standard library; prints the environment's ``bin`` directory on stdout, progress on stderr.

One environment serves both README commands (runtime, test and lint tools together).

Usage: ``python3 scripts/bootstrap.py``
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK_FILE = ROOT / "requirements.lock"
COMPLETE_MARKER = ".free-fed-complete"


def requirements() -> list[str]:
    """Pinned requirements from pyproject.toml: runtime plus the dev group."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [*meta["project"]["dependencies"], *meta["dependency-groups"]["dev"]]


def env_key(reqs: list[str]) -> str:
    """Hash of everything that decides the environment's contents."""
    h = hashlib.sha256()
    h.update(sys.version.encode())
    h.update("\n".join(sorted(reqs)).encode())
    if LOCK_FILE.exists():
        h.update(LOCK_FILE.read_bytes())
    return h.hexdigest()[:16]


def log(message: str) -> None:
    """Progress goes to stderr so stdout stays the bin path."""
    print(f"[bootstrap] {message}", file=sys.stderr, flush=True)


def build(venv: Path, reqs: list[str]) -> None:
    """Create the venv at ``venv`` and install ``reqs`` (constrained by the lock file)."""
    if venv.exists():
        log(f"removing incomplete environment {venv}")
        shutil.rmtree(venv)
    log(f"creating {venv} (first run only; about 3 minutes)")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    cmd = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    cmd += ["--progress-bar", "off", "--no-input"]
    if LOCK_FILE.exists():
        cmd += ["-c", str(LOCK_FILE)]
    subprocess.run([*cmd, *reqs], check=True, stdout=sys.stderr)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "check"], check=True, stdout=sys.stderr
    )
    (venv / COMPLETE_MARKER).write_text("\n".join(reqs) + "\n")
    log("environment ready")


def main(argv: list[str] | None = None) -> int:
    """Ensure the environment exists; print its bin directory."""
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    reqs = requirements()
    cache = Path(os.environ.get("FREEFED_CACHE", Path.home() / ".cache" / "free-fed"))
    cache.mkdir(parents=True, exist_ok=True)
    venv = cache / f"venv-{env_key(reqs)}"
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs at once build it only once
        if not (venv / COMPLETE_MARKER).exists():
            build(venv, reqs)
    print(venv / "bin")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
