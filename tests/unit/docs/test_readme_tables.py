from pathlib import Path

import pytest

from scripts import readme_tables


def test_readme_quotes_the_current_results_files():
    assert readme_tables.main(["--check"]) == 0


def test_blocks_are_replaced_by_the_results_file(tmp_path: Path):
    (tmp_path / "speed.md").write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")
    readme = "intro\n<!-- results:speed -->\nold figure\n<!-- /results:speed -->\nend\n"
    out = readme_tables.render(readme, tmp_path)
    table = "| a | b |\n|---|---|\n| 1 | 2 |\n"
    assert out == f"intro\n<!-- results:speed -->\n{table}<!-- /results:speed -->\nend\n"


def test_an_inline_block_fills_a_table_cell_from_a_one_line_file(tmp_path: Path):
    (tmp_path / "head.md").write_text("FREE 75.1 / 89.7\n")
    page = "| main job | <!-- inline:head -->old<!-- /inline:head --> | cmd |\n"
    out = readme_tables.render(page, tmp_path)
    assert out == "| main job | <!-- inline:head -->FREE 75.1 / 89.7<!-- /inline:head --> | cmd |\n"
    (tmp_path / "head.md").write_text("two\nlines\n")
    with pytest.raises(readme_tables.ReadmeError, match="more than one line"):
        readme_tables.render(page, tmp_path)


def test_a_block_without_a_results_file_is_an_error(tmp_path: Path):
    with pytest.raises(readme_tables.ReadmeError, match="results:missing"):
        readme_tables.render("<!-- results:missing -->\nx\n<!-- /results:missing -->\n", tmp_path)


def test_every_page_with_a_results_block_is_checked():
    found = {p.relative_to(readme_tables.ROOT).as_posix() for p in readme_tables.pages()}
    assert "README.md" in found and "scripts/README.md" in found
    assert not any(p.startswith("scripts/results/") for p in found)
    quoting = {
        p
        for p in found
        if readme_tables.BLOCK.search((readme_tables.ROOT / p).read_text()) is not None
    }
    # the benchmark page and the study pages carry generated tables
    assert "scripts/README.md" in quoting
    assert any(p.startswith("scripts/studies/") for p in quoting)


def test_check_names_a_stale_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    (tmp_path / "speed.md").write_text("new\n")
    page = tmp_path / "page.md"
    page.write_text("<!-- results:speed -->\nold\n<!-- /results:speed -->\n")
    argv = ["--check", "--page", str(page), "--results", str(tmp_path)]
    assert readme_tables.main(argv) == 1
    assert "page.md quotes stale results" in capsys.readouterr().err
    assert readme_tables.main(["--page", str(page), "--results", str(tmp_path)]) == 0
    assert readme_tables.main(argv) == 0


def test_the_run_config_table_is_written_from_the_keys_the_code_reads(tmp_path: Path):
    from free_common.run_config import KEYS

    page = "<!-- generated:run_config -->\nstale\n<!-- /generated:run_config -->\n"
    out = readme_tables.render(page, tmp_path)
    assert "stale" not in out and "| `compare.workers` | `0` |" in out
    assert '| `preset` | `"xkd-cpu"` |' in out and "| `export.enabled` | `true` |" in out
    assert not any(f"`{k}`" in out for k in KEYS if k.startswith("free."))
    server_page = (readme_tables.ROOT / "server" / "README.md").read_text()
    missing = [k for k in KEYS if f"`{k}`" not in server_page]
    assert missing == []  # the free.* overrides are listed by hand beside the generated table
    with pytest.raises(readme_tables.ReadmeError, match="generated:nothing"):
        readme_tables.render("<!-- generated:nothing -->\n<!-- /generated:nothing -->\n", tmp_path)
