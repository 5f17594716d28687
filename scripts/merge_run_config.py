"""Merge several ``--run-config`` strings into one, a later value of a key winning.

``flwr run`` merges several ``--run-config`` options table by table: a later option with
any ``data.*`` key replaces every ``data.*`` key of an earlier one. So ``scripts/run_main.sh``
puts its own keys (``data.assets-dir``, ``out.dir``, ``fed.min-nodes``) and the user's into
a single option, built here.

Usage::

    python -m scripts.merge_run_config 'out.dir="/x" fed.min-nodes=20' 'fed.num-rounds=2'
"""

from __future__ import annotations

import re
import sys

# The pattern flwr uses to split a --run-config string into key=value pairs.
PAIR = re.compile(r"(\S+?)=('[^']*'|\"[^\"]*\"|\S+)")


def merge_run_configs(*texts: str) -> str:
    """One ``k=v k2=v2`` string holding every key of ``texts``, each at its last value."""
    merged: dict[str, str] = {}
    for text in texts:
        for key, value in PAIR.findall(text):
            merged.pop(key, None)
            merged[key] = value
    return " ".join(f"{key}={value}" for key, value in merged.items())


def main(argv: list[str] | None = None) -> int:
    print(merge_run_configs(*(sys.argv[1:] if argv is None else argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
