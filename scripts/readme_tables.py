"""Copy benchmark tables from ``scripts/results/*.md`` into the README between markers.

A README block ``<!-- results:NAME -->`` ... ``<!-- /results:NAME -->`` is replaced by the
contents of ``scripts/results/NAME.md``, so every figure the README quotes comes from a file a
benchmark wrote, never from typing. ``--check`` exits 1 when the README is out of date (a unit
test runs it).

Usage: ``python -m scripts.readme_tables [--check]``
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- results:([\w.-]+) -->\n)(.*?)(<!-- /results:\2 -->)", re.DOTALL)


class ReadmeError(ValueError):
    """A README block names a results file that does not exist."""


def render(readme: str, results_dir: Path) -> str:
    """The README with every results block replaced by its file's current contents."""

    def fill(match: re.Match[str]) -> str:
        source = results_dir / f"{match.group(2)}.md"
        if not source.is_file():
            raise ReadmeError(f"README block results:{match.group(2)} has no file {source}")
        return f"{match.group(1)}{source.read_text().rstrip()}\n{match.group(4)}"

    return BLOCK.sub(fill, readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the README is stale")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--results", type=Path, default=ROOT / "scripts" / "results")
    args = parser.parse_args(argv)
    current = args.readme.read_text()
    updated = render(current, args.results)
    if args.check:
        if updated != current:
            print(
                "README.md quotes stale results: run python -m scripts.readme_tables",
                file=sys.stderr,
            )
            return 1
        return 0
    args.readme.write_text(updated)
    print(f"updated {len(BLOCK.findall(updated))} results blocks in {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
