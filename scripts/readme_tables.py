"""Copy benchmark tables from ``scripts/results/*.md`` into the documentation pages.

A block ``<!-- results:NAME -->`` ... ``<!-- /results:NAME -->`` in any page is replaced by
the contents of ``scripts/results/NAME.md`` (and ``<!-- inline:NAME -->`` ...
``<!-- /inline:NAME -->`` within one line, such as a table cell, by a one-line file), so
every figure a page quotes comes from a file a benchmark wrote, never from typing. A block
``<!-- generated:NAME -->`` ... ``<!-- /generated:NAME -->`` is written from the code itself
(:data:`GENERATED`: ``run_config``, the run-config keys of ``free_common.run_config.KEYS``
other than the FREE overrides), so a reference table cannot drift from what the code reads.
The pages are the README and every other tracked Markdown file of the repository (:func:`pages`:
``scripts/README.md``, the study pages, the pages beside the code). ``--check`` exits 1 when
any page is out of date (a unit test runs it).

Usage: ``python -m scripts.readme_tables [--check]``
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from free_common.run_config import KEYS, Scalar

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "scripts" / "results"
BLOCK = re.compile(r"(<!-- results:([\w.-]+) -->\n)(.*?)(<!-- /results:\2 -->)", re.DOTALL)
INLINE = re.compile(r"(<!-- inline:([\w.-]+) -->)([^\n]*?)(<!-- /inline:\2 -->)")
"""A one-line block inside a line (a table cell): ``NAME.md`` must hold a single line."""
GENERATED_BLOCK = re.compile(
    r"(<!-- generated:([\w.-]+) -->\n)(.*?)(<!-- /generated:\2 -->)", re.DOTALL
)
_SKIP = {".git", ".venv", "node_modules", "runs", "__pycache__"}


def _toml(value: Scalar) -> str:
    """A default as it is written in ``pyproject.toml``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def run_config_table() -> str:
    """Every run-config key but the ``free.*`` overrides: key, default and meaning."""
    rows = [
        f"| `{k.name}` | `{_toml(k.default)}` | {k.meaning.replace('|', '/')} |"
        for k in KEYS.values()
        if not k.name.startswith("free.")
    ]
    return "\n".join(["| key | default | meaning |", "|---|---|---|", *rows]) + "\n"


GENERATED: dict[str, Callable[[], str]] = {"run_config": run_config_table}
"""Blocks written from the code: name -> its text."""


class ReadmeError(ValueError):
    """A page's block names a results file that does not exist."""


def _results_text(results_dir: Path, name: str, kind: str) -> str:
    """The contents of ``NAME.md``; a page block naming no such file is an error."""
    source = results_dir / f"{name}.md"
    if not source.is_file():
        raise ReadmeError(f"page {kind}{name} has no file {source}")
    return source.read_text()


def render(readme: str, results_dir: Path) -> str:
    """The page with every results block replaced by its file's current contents."""

    def fill(match: re.Match[str]) -> str:
        text = _results_text(results_dir, match.group(2), "block results:")
        return f"{match.group(1)}{text.rstrip()}\n{match.group(4)}"

    def fill_inline(match: re.Match[str]) -> str:
        text = _results_text(results_dir, match.group(2), "inline block ").strip()
        if "\n" in text:
            raise ReadmeError(
                f"{results_dir / match.group(2)}.md is quoted inline but holds more than one line"
            )
        return f"{match.group(1)}{text}{match.group(4)}"

    def fill_generated(match: re.Match[str]) -> str:
        make = GENERATED.get(match.group(2))
        if make is None:
            raise ReadmeError(
                f"page block generated:{match.group(2)}: expected one of {', '.join(GENERATED)}"
            )
        return f"{match.group(1)}{make().rstrip()}\n{match.group(4)}"

    filled = GENERATED_BLOCK.sub(fill_generated, BLOCK.sub(fill, readme))
    return INLINE.sub(fill_inline, filled)


def pages(root: Path = ROOT, results_dir: Path = RESULTS) -> list[Path]:
    """Every Markdown page under ``root`` outside the results folder and tool folders."""
    found = []
    for path in sorted(root.rglob("*.md")):
        rel = path.relative_to(root)
        if _SKIP.intersection(rel.parts) or path.is_relative_to(results_dir):
            continue
        found.append(path)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if any page is stale")
    parser.add_argument(
        "--page",
        "--readme",
        dest="pages",
        type=Path,
        action="append",
        help="a page to fill (repeatable; default: every page, see pages())",
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    targets = args.pages or pages(ROOT, args.results)
    stale, blocks = [], 0
    for page in targets:
        current = page.read_text()
        updated = render(current, args.results)
        blocks += sum(len(p.findall(updated)) for p in (BLOCK, INLINE, GENERATED_BLOCK))
        if updated == current:
            continue
        if args.check:
            stale.append(page)
        else:
            page.write_text(updated)
    if args.check:
        for page in stale:
            print(
                f"{page} quotes stale results: run python -m scripts.readme_tables",
                file=sys.stderr,
            )
        return 1 if stale else 0
    print(f"{blocks} results blocks in {len(targets)} pages are up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
