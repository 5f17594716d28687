"""Render the embedded glyph benchmark from Debian's font packages.

Usage (from the repository root, on Debian 12 with the fonts installed)::

    python scripts/datasets/render_glyphs.py              # writes the glyphs-v1 assets
    python scripts/datasets/render_glyphs.py --out-dir /tmp/glyphs --seed 1
    python scripts/datasets/render_glyphs.py --check      # re-render, compare with the copy
    python scripts/datasets/render_glyphs.py --apt-command  # print the font install command

When fonts are missing it prints the ``apt-get`` command that installs them and exits 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.datasets.glyphs_render.alphabets import apt_install_command
from scripts.datasets.glyphs_render.build import (
    DATASET_NAME,
    DEFAULT_SEED,
    build_dataset,
    discover_faces,
    write_dataset,
)
from scripts.datasets.glyphs_render.fonts import FontsMissingError

log = logging.getLogger("render_glyphs")
ASSETS = Path(__file__).resolve().parents[2] / "free_common" / "data" / "assets"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=ASSETS, help="where to write the files")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    parser.add_argument(
        "--apt-command",
        action="store_true",
        help="print the apt-get command that installs the font packages, and exit",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="render to a temporary folder and compare the npz hash with the shipped manifest",
    )
    return parser.parse_args(argv)


def render(out_dir: Path, seed: int) -> tuple[str, dict[str, int]]:
    """Render the benchmark into ``out_dir``; return the npz hash and the class counts.

    Raises:
        FontsMissingError: if the font packages are not installed.
    """
    glyphs = build_dataset(discover_faces(), seed=seed)
    npz_path, manifest_path = out_dir / f"{DATASET_NAME}.npz", out_dir / f"{DATASET_NAME}.json"
    digest = write_dataset(glyphs, npz_path, manifest_path)
    return digest, {split: len(images) for split, images in glyphs.images.items()}


def main(argv: list[str] | None = None) -> int:
    """Render, write, report; return the process exit status."""
    args = parse_args(argv)
    if args.apt_command:
        print(apt_install_command())
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    start = time.perf_counter()
    try:
        if args.check:
            with tempfile.TemporaryDirectory(prefix="glyphs-check-") as scratch:
                digest, counts = render(Path(scratch), args.seed)
        else:
            digest, counts = render(args.out_dir, args.seed)
    except FontsMissingError as error:
        print(error, file=sys.stderr)
        return 2
    log.info("rendered %s classes in %.1f s", counts, time.perf_counter() - start)
    if args.check:
        shipped = json.loads((ASSETS / f"{DATASET_NAME}.json").read_text())["npz"]["sha256"]
        if shipped != digest:
            log.error("re-rendered npz %s differs from the shipped %s", digest, shipped)
            return 1
        log.info("re-rendered npz matches the shipped copy (%s)", digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
