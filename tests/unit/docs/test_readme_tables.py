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


def test_a_block_without_a_results_file_is_an_error(tmp_path: Path):
    with pytest.raises(readme_tables.ReadmeError, match="results:missing"):
        readme_tables.render("<!-- results:missing -->\nx\n<!-- /results:missing -->\n", tmp_path)
