"""``client.edge verify`` prints the server's signed reason for shipping the model."""

import json

from client.edge.cli import _selection_line


def test_the_verdict_line_is_printed_and_a_broken_record_is_named_not_trusted() -> None:
    record = {"best": "FREE", "shipped": "FREE", "line": "meta-val: FREE is best, +2.00 points"}
    assert _selection_line(json.dumps(record)) == record["line"]
    assert _selection_line("{not json") == "unreadable selection record (9 characters)"
    assert _selection_line("[1, 2]") == "unreadable selection record (6 characters)"
