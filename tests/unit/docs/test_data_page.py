"""free_common/data/README.md quotes the shipped icon manifest and the difficulty report."""

from __future__ import annotations

import re
from pathlib import Path

from free_common.data.icons import icon_manifest
from scripts import readme_tables

ROOT = Path(__file__).resolve().parents[3]
PAGE = ROOT / "free_common" / "data" / "README.md"


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n### ", start + len(heading))
    return text[start : end if end >= 0 else len(text)]


def _rows(section: str) -> list[list[str]]:
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row] for row in rows[2:]]  # skip header and rule


def test_difficulty_block_is_current() -> None:
    text = PAGE.read_text()
    assert "<!-- results:icons_difficulty -->" in text
    assert readme_tables.render(text, ROOT / "scripts" / "results") == text


def test_theme_table_matches_the_manifest() -> None:
    manifest = icon_manifest()
    expected = [
        [
            t["directory"],
            f"{t['package']} {manifest['packages'][t['package']]['version']}",
            t["licence"],
            t["family"],
            str(t["images"]),
        ]
        for t in manifest["themes"]
    ]
    assert _rows(_section(PAGE.read_text(), "### Themes and licences")) == expected


def test_split_table_matches_the_manifest() -> None:
    manifest = icon_manifest()
    rows = _rows(_section(PAGE.read_text(), "## icons-v1"))[:3]
    for row, split in zip(rows, ("train", "val", "test"), strict=True):
        classes, images = (int(re.sub(r"\D", "", cell)) for cell in row[1:3])
        assert classes == manifest["split_class_counts"][split]
        assert images == manifest["split_image_counts"][split]
