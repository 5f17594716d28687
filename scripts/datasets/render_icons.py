"""Render the embedded icon benchmark (icons-v1) from Debian's icon-theme packages.

Usage (from the repository root, on Debian 12 with the themes installed)::

    python -m scripts.datasets.render_icons                # free_common/data/assets/icons-v1.*
    python -m scripts.datasets.render_icons --image-size 64 --out-dir /tmp/icons64
    python -m scripts.datasets.render_icons --check        # re-render, compare the npz hash
    python -m scripts.datasets.render_icons --apt-command  # print the install command

When packages are missing it prints the ``apt-get`` command that installs them and exits 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from scripts.datasets.icons.build import (
    DATASET_NAME,
    DEFAULT_SEED,
    SPLIT_NAMES,
    build_dataset,
    discover,
    write_dataset,
)
from scripts.datasets.icons.packages import ThemesMissingError, installed_versions, package_info
from scripts.datasets.icons.raster import RasterError, RenderParams, rsvg_convert
from scripts.datasets.icons.themes import THEMES, apt_install_command, theme_packages

log = logging.getLogger("render_icons")
ASSETS = Path(__file__).resolve().parents[2] / "free_common" / "data" / "assets"
SHIPPED_SIZE = RenderParams().image_size


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=ASSETS, help="where to write the files")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the class split")
    parser.add_argument(
        "--image-size",
        type=int,
        default=SHIPPED_SIZE,
        help=f"output side in pixels, a multiple of 32 (other than {SHIPPED_SIZE}: the files are "
        "named icons-v1-<size>px)",
    )
    parser.add_argument(
        "--apt-command", action="store_true", help="print the apt-get install command, and exit"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="render to a temporary folder and compare the npz hash with the shipped manifest",
    )
    args = parser.parse_args(argv)
    if args.image_size < 32 or args.image_size % 32:
        parser.error(f"--image-size must be a multiple of 32, got {args.image_size}")
    if args.check and args.image_size != SHIPPED_SIZE:
        parser.error(f"--check compares with the shipped {SHIPPED_SIZE} px copy; drop --image-size")
    return args


def render(out_dir: Path, seed: int, image_size: int) -> tuple[str, dict[str, int]]:
    """Render the benchmark into ``out_dir``; return the npz hash and the class counts.

    Raises:
        ThemesMissingError: if a package is not installed.
        RasterError: if ``rsvg-convert`` is missing.
    """
    rsvg_convert()
    versions = installed_versions(theme_packages())
    packages = {name: package_info(name, version) for name, version in versions.items()}
    missing_hash = [name for name, info in packages.items() if not info.deb_sha256]
    if missing_hash:
        log.warning("no .deb SHA-256 in the APT index for %s", ", ".join(missing_hash))
    params = replace(RenderParams(), image_size=image_size)
    icons = build_dataset(discover(THEMES, params.source_size), packages, params=params, seed=seed)
    name = DATASET_NAME if image_size == SHIPPED_SIZE else f"{DATASET_NAME}-{image_size}px"
    digest = write_dataset(icons, out_dir / f"{name}.npz", out_dir / f"{name}.json")
    counts = icons.manifest["split_class_counts"]
    assert isinstance(counts, dict)
    return digest, {s: int(counts[s]) for s in SPLIT_NAMES}


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
            with tempfile.TemporaryDirectory(prefix="icons-check-") as scratch:
                digest, counts = render(Path(scratch), args.seed, args.image_size)
        else:
            digest, counts = render(args.out_dir, args.seed, args.image_size)
    except (ThemesMissingError, RasterError) as error:
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
