"""Record a finished main-job run (``scripts/run_main.sh``) as the README's figures.

Reads ``<run>/out/summary.json`` (the server's results table, written by the ServerApp) and
``<run>/out/timing.json`` (wall time of ``flwr run``, written by the run script), and writes
``scripts/results/main_job.json`` and ``main_job.md``, which ``python -m
scripts.readme_tables`` copies into the README. No figure is typed by hand.

Usage: ``python -m scripts.record_main_job runs/main-<time> [--note "..."]``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BUDGET_S = 15 * 60


class RunError(ValueError):
    """The run directory lacks what a finished main job writes."""


def load_run(run_dir: Path) -> dict[str, Any]:
    """The summary and timing of one finished run, as one JSON-ready record."""
    out = run_dir / "out"
    missing = [p.name for p in (out / "summary.json", out / "timing.json") if not p.is_file()]
    if missing:
        raise RunError(
            f"{run_dir}: no {', '.join(missing)} under out/: pass the directory that "
            "scripts/run_main.sh printed ('run directory: ...') after the run finished"
        )
    summary = json.loads((out / "summary.json").read_text())
    timing = json.loads((out / "timing.json").read_text())
    if timing.get("exit_code") != 0:
        raise RunError(f"{run_dir}: flwr run exited with code {timing.get('exit_code')}")
    config = summary["free_config"]
    return {
        "run": run_dir.name,
        "owners": timing["owners"],
        "extra_args": timing.get("extra_args", ""),
        "cpus": timing.get("cpus"),
        "flwr_run_s": timing["flwr_run_s"],
        "budget_s": BUDGET_S,
        "within_budget": timing["flwr_run_s"] <= BUDGET_S,
        "pool": summary["pool"],
        "free_iterations": config["iterations"],
        "test_tasks": config["eval"]["test_tasks"],
        "best_iteration": summary.get("best_iteration"),
        "rows": summary["rows"],
        "table": summary["table"],
    }


def markdown(record: dict[str, Any], note: str) -> str:
    """The README block for ``record``."""
    by_arch = ", ".join(f"{n} {arch}" for arch, n in record["pool"]["by_arch"].items())
    args = f" {record['extra_args']}" if record["extra_args"] else ""
    minutes = record["flwr_run_s"] / 60
    verdict = "within" if record["within_budget"] else "OVER"
    lines = [
        f"`scripts/run_main.sh{args}` ({record['owners']} owners: {by_arch}; FREE `cpu` preset, "
        f"{record['free_iterations']} iterations; {record['test_tasks']} meta-test tasks per "
        f"method and shot; {record['cpus']} cores{'; ' + note if note else ''}):",
        "",
        f"- `flwr run` took {record['flwr_run_s']} s ({minutes:.1f} min, {verdict} the "
        f"{record['budget_s'] // 60}-minute budget); best meta-val iteration "
        f"{record['best_iteration']}",
        "",
        record["table"],
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line: the run directory, ``--note``, ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--note", default="", help="a remark on the machine or its load")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    try:
        record = load_run(args.run_dir)
    except (RunError, KeyError, json.JSONDecodeError) as err:
        print(f"record_main_job: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "main_job.json").write_text(json.dumps({**record, "note": args.note}, indent=2))
    (args.out / "main_job.md").write_text(markdown(record, args.note))
    print(markdown(record, args.note))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
