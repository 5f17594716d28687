"""Record finished main-job runs (``scripts/run_main.sh``, one per seed) as their figures.

Reads each run's ``out/summary.json`` (the server's comparison of FREE, Random, Average and
the best owner, and its meta-val verdict) and ``out/timing.json`` (wall time of ``flwr
run``), and writes ``scripts/results/main_job.json`` and ``main_job.md``, which ``python -m
scripts.readme_tables`` copies into server/README.md ("Measured"): per seed, the time and
the verdict; across seeds, each method's mean, across-seed standard deviation and worst seed
per protocol and shot; FREE's margin over the better of Random and Average in every seed
against the goal of :data:`GOAL_POINTS`; and, for a multi-domain run, the same statistics on
each domain's meta-test alone. No figure is typed by hand.

Beside them, ``main_job_headline.md`` (one line) and ``main_job_table.md`` (the across-seed
table alone, for the README). ``--rebuild`` writes the markdown files again from the JSON
already recorded, without the run directories (after a change of their layout).

Usage: ``python -m scripts.record_main_job runs/main-A runs/main-B runs/main-C [--note "..."]``;
``python -m scripts.record_main_job --rebuild [--stem main_job_mixed]``
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

from server.report import PROTOCOL_NAMES

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BUDGET_S = 15 * 60
GOAL_POINTS = 1.42
"""FREE's goal over both baselines (Random, Average) at both shots, in every seed."""
BASELINES = ("Random", "Average")


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
    owners = _owners(out / "report" / "report.json")
    return {
        "run": run_dir.name,
        "seed": summary["settings"]["seed"],
        "preset": summary["settings"]["preset"],
        "owners": timing["owners"],
        "extra_args": timing.get("extra_args", ""),
        "cpus": timing.get("cpus"),
        "flwr_run_s": timing["flwr_run_s"],
        "within_budget": timing["flwr_run_s"] <= BUDGET_S,
        "pool": summary["pool"],
        "free_iterations": config["iterations"],
        "test_tasks": config["eval"]["test_tasks"],
        "best_iteration": summary.get("best_iteration"),
        "pool_kd_steps": config.get("pool_kd", {}).get("steps", 0)
        if config.get("pool_kd", {}).get("enabled")
        else 0,
        "best_pool_kd_step": _best_pool_kd_step(out, summary),
        "pool_kd_teacher_dtype": summary.get("pool_kd", {}).get("teacher_dtype", "float32"),
        "pool_kd_learner_dtype": summary.get("pool_kd", {}).get("learner_dtype", "float32"),
        "verdict": summary.get("verdict"),
        "screening": owners,
        "rows": summary["rows"],
        "domain_rows": summary.get("domain_rows", {}),
        "domain_tasks": summary.get(
            "domain_tasks", summary["settings"].get("compare_domain_tasks", 0)
        ),
        "by_domain": "domain_tasks" in summary,  # each task within one domain (since 2026-12-07)
        "table": summary["table"],
    }


def _best_pool_kd_step(out: Path, summary: dict[str, Any]) -> int:
    """The pool distillation step of the shipped FREE model (0: a meta-training iteration's).

    Runs that predate the summary's ``best_pool_kd_step`` key have it in FREE's checkpoint.
    """
    if "best_pool_kd_step" in summary:
        return int(summary["best_pool_kd_step"] or 0)
    checkpoint = out / "free" / "checkpoints" / "latest.pt"
    if not checkpoint.is_file():
        return 0
    from server.checkpoint import load_checkpoint

    saved = load_checkpoint(checkpoint)
    return 0 if saved is None else int(saved["run"].get("best_step", 0))


def _owners(report: Path) -> dict[str, Any] | None:
    """Screening's verdict on the run's owners (the report's owner story), or None without it.

    Returns:
        ``{"counts": {status: n}, "not_accepted": [{owner, arch, status, why}]}``.
    """
    if not report.is_file():
        return None
    rows = json.loads(report.read_text()).get("owners", [])
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    others = [
        {k: row[k] for k in ("owner", "arch", "status", "why")}
        for row in rows
        if row["status"] != "accepted"
    ]
    return {"counts": counts, "not_accepted": others}


def screening_cell(screening: dict[str, Any] | None) -> str:
    """One table cell: how many owners each screening status holds, and who was not accepted."""
    if screening is None:
        return "not recorded"
    counts = ", ".join(f"{n} {status}" for status, n in sorted(screening["counts"].items()))
    who = "; ".join(
        f"{r['owner']} ({r['arch']}, {r['status']}: {r['why'].replace('|', '/')})"
        for r in screening["not_accepted"]
    )
    return counts + (f": {who}" if who else "")


def aggregate_domains(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """:func:`aggregate` of each domain's own meta-test rows (multi-domain runs; else empty)."""
    domains = list(dict.fromkeys(d for r in runs for d in r.get("domain_rows", {})))
    return {
        d: aggregate([{"rows": r.get("domain_rows", {}).get(d, [])} for r in runs]) for d in domains
    }


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Across seeds: ``{protocol: {method: {shot: {mean, sd, worst, seeds, ci95}}}}`` and margins.

    Accuracies in percent. ``margins[protocol][shot]`` lists, per seed, FREE minus the better
    of Random and Average in that seed.
    """
    cells: dict[str, dict[str, dict[str, list[tuple[float, float]]]]] = {}
    for run in runs:
        for row in run["rows"]:
            protocol = row.get("protocol") or "tuned"
            for shot, (mean, ci) in row["shots"].items():
                per_shot = cells.setdefault(protocol, {}).setdefault(row["method"], {})
                per_shot.setdefault(str(shot), []).append((100 * mean, 100 * ci))
    table: dict[str, Any] = {}
    for protocol, by_method in cells.items():
        for method, by_shot in by_method.items():
            for shot, values in by_shot.items():
                means = np.array([m for m, _ in values])
                table.setdefault(protocol, {}).setdefault(method, {})[shot] = {
                    "mean": round(float(means.mean()), 2),
                    "sd": round(float(means.std(ddof=1)), 2) if len(means) > 1 else 0.0,
                    "worst": round(float(means.min()), 2),
                    "seeds": [round(float(m), 2) for m in means],
                    "ci95": round(float(np.mean([c for _, c in values])), 2),
                }
    margins: dict[str, dict[str, list[float]]] = {}
    for protocol, by_method in table.items():
        if "FREE" not in by_method or not all(b in by_method for b in BASELINES):
            continue
        for shot, free in by_method["FREE"].items():
            rivals = [by_method[b][shot]["seeds"] for b in BASELINES if shot in by_method[b]]
            if len(rivals) != len(BASELINES) or len(free["seeds"]) != len(rivals[0]):
                continue
            margins.setdefault(protocol, {})[shot] = [
                round(f - max(r[i] for r in rivals), 2) for i, f in enumerate(free["seeds"])
            ]
    return {"table": table, "margins": margins}


def _shots(agg: dict[str, Any]) -> list[str]:
    """Every shot of the aggregated table, in increasing order (``"1"``, ``"5"``)."""
    return sorted({s for p in agg["table"].values() for m in p.values() for s in m}, key=int)


def _stage_words(run: dict[str, Any]) -> str:
    """The stage's steps and number formats (float32 in runs from before they were recorded)."""
    steps = run.get("pool_kd_steps", 0)
    teachers = run.get("pool_kd_teacher_dtype", "float32")
    learner = run.get("pool_kd_learner_dtype", "float32")
    formats = f"teachers in {teachers}, learner in {learner}"
    return f" then {steps} pool distillation steps ({formats})" if steps else ""


def command_words(runs: list[dict[str, Any]]) -> str:
    """The runs' shared ``--run-config``, the seed written as K (``--run-config 'seed=K'``).

    Settings that the runs do not all share are not a common command: each run's own
    arguments stay in the JSON record (``extra_args``), and the header says they differ.
    """
    shared = {tuple(_settings_besides_seed(r.get("extra_args", ""))) for r in runs}
    if len(shared) != 1:
        return "--run-config 'seed=K ...' (settings differ between runs: see extra_args)"
    settings = " ".join(("seed=K", *shared.pop()))
    return f"--run-config '{settings}'"


def _settings_besides_seed(extra_args: str) -> list[str]:
    """The ``key=value`` settings of a run's ``--run-config`` arguments, its seed left out."""
    words = shlex.split(extra_args)
    settings: list[str] = []
    for flag, value in zip(words, words[1:], strict=False):
        if flag == "--run-config":
            settings += [w for w in shlex.split(value, posix=False) if not w.startswith("seed=")]
    return settings


def _best_cell(run: dict[str, Any]) -> str:
    step = run.get("best_pool_kd_step", 0)
    return (
        f"{run['best_iteration']}, distillation step {step}" if step else str(run["best_iteration"])
    )


def markdown(runs: list[dict[str, Any]], agg: dict[str, Any], note: str) -> str:
    """The README block for ``runs`` (one per seed)."""
    first = runs[0]
    by_arch = ", ".join(f"{n} {arch}" for arch, n in first["pool"]["by_arch"].items())
    seeds = ", ".join(str(r["seed"]) for r in runs)
    lines = [
        f"`scripts/run_main.sh` over {len(runs)} seed(s) ({seeds}; `{command_words(runs)}`), "
        f"{first['owners']} owners ({by_arch}); FREE `{first['preset']}` preset, "
        f"{first['free_iterations']} iterations{_stage_words(first)}; {first['test_tasks']} "
        f"meta-test tasks per method, protocol and shot{_spread_words(first)}; "
        f"{first['cpus']} cores{'; ' + note if note else ''}.",
        "",
        "| seed | `flwr run` | owners after screening | best iteration | the run's meta-val "
        "verdict |",
        "|---|---|---|---|---|",
    ]
    for r in runs:
        within = "within" if r["within_budget"] else "OVER"
        line = (r.get("verdict") or {}).get("line", "no verdict")
        lines.append(
            f"| {r['seed']} | {r['flwr_run_s']} s ({r['flwr_run_s'] / 60:.1f} min, {within} "
            f"{BUDGET_S // 60} min) | {screening_cell(r.get('screening'))} | "
            f"{_best_cell(r)} | {line} |"
        )
    lines += [
        "",
        "Mean over seeds ± across-seed sd (worst seed) [mean per-task 95% CI]:",
        "",
        *table_lines(agg),
        "",
        *margin_lines(agg["margins"]),
    ]
    for domain, by_domain in agg.get("domains", {}).items():
        lines += [
            "",
            f"Meta-test of the {domain} classes alone, {_domain_words(first)} (the tuned "
            "protocol at the rate chosen on the meta-val of both domains), same statistics:",
            "",
            *table_lines(by_domain),
        ]
    return "\n".join(lines) + "\n"


def _spread_words(run: dict[str, Any]) -> str:
    """How a multi-domain run's tasks were drawn (nothing for one domain)."""
    if run.get("by_domain") and run.get("domain_rows"):
        return (
            " (each within one domain, the domains in turn: FREE's multi-domain protocol, "
            "the mean over domains)"
        )
    return ""


def _domain_words(run: dict[str, Any]) -> str:
    """How one domain's table was measured: its share of the tasks, or tasks of its own."""
    if run.get("by_domain"):
        return (
            f"the {run['domain_tasks']} tasks of that domain among each method's, protocol's "
            "and shot's (every task drawn within one domain, the domains in turn)"
        )
    return f"{run['domain_tasks']} tasks per method, protocol and shot"


def table_lines(agg: dict[str, Any]) -> list[str]:
    """The markdown table of one :func:`aggregate`: protocol x method rows, one column per shot."""
    shots = _shots(agg)
    lines = [
        "| protocol | method | " + " | ".join(f"5-way {s}-shot" for s in shots) + " |",
        "|---|---|" + "---|" * len(shots),
    ]
    for protocol in PROTOCOL_NAMES:
        for method, by_shot in agg["table"].get(protocol, {}).items():
            cells = [
                f"{c['mean']:.2f} ± {c['sd']:.2f} ({c['worst']:.2f}) [{c['ci95']:.2f}]"
                if (c := by_shot.get(s))
                else "n/a"
                for s in shots
            ]
            lines.append(f"| {PROTOCOL_NAMES[protocol]} | {method} | " + " | ".join(cells) + " |")
    return lines


def table_page(runs: list[dict[str, Any]], agg: dict[str, Any]) -> str:
    """The across-seed table with a line saying what it is (the README's copy)."""
    first = runs[0]
    seeds = ", ".join(str(r["seed"]) for r in runs)
    lines = [
        f"{first['test_tasks']} meta-test tasks per method, protocol and shot; mean over "
        f"{len(runs)} training seeds ({seeds}) ± across-seed sd (worst seed) [mean per-task "
        "95% CI], %:",
        "",
        *table_lines(agg),
    ]
    return "\n".join(lines) + "\n"


def headline(runs: list[dict[str, Any]], agg: dict[str, Any]) -> str:
    """One line for the README's headline table: per protocol, every method's mean over seeds.

    Also names how many seeds chose each shipped method (the runs' meta-val verdicts).
    """
    shots = _shots(agg)
    parts = []
    for protocol in ("proto", "tuned", "published"):
        by_method = agg["table"].get(protocol)
        if not by_method:
            continue
        cells = ", ".join(
            f"{method} " + " / ".join(f"{by_shot[s]['mean']:.1f}" for s in shots if s in by_shot)
            for method, by_shot in by_method.items()
        )
        parts.append(f"{PROTOCOL_NAMES[protocol]}: {cells}")
    shipped: dict[str, int] = {}
    for run in runs:
        name = (run.get("verdict") or {}).get("shipped") or "FREE"
        shipped[name] = shipped.get(name, 0) + 1
    ships = ", ".join(f"{name} in {n} of {len(runs)}" for name, n in shipped.items())
    return (
        f"mean of {len(runs)} seed(s) ({', '.join(str(r['seed']) for r in runs)}), "
        + "; ".join(parts)
        + f"; the guard shipped {ships}"
    )


def margin_lines(margins: dict[str, dict[str, list[float]]]) -> list[str]:
    """One line per protocol: FREE minus the better baseline per seed, and the goal's verdict."""
    out = []
    for protocol, by_shot in margins.items():
        parts = []
        for shot, values in sorted(by_shot.items(), key=lambda kv: int(kv[0])):
            met = "met" if min(values) >= GOAL_POINTS else "NOT met"
            seeds = ", ".join(f"{v:+.2f}" for v in values)
            parts.append(f"{shot}-shot {seeds} (goal {GOAL_POINTS:+.2f} in every seed: {met})")
        out.append(
            f"- FREE minus the better of Random and Average, {PROTOCOL_NAMES[protocol]}, per "
            "seed: " + "; ".join(parts)
        )
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: run directories (one per seed), ``--note``, ``--out``, ``--stem``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", type=Path, nargs="*")
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="write the markdown files again from <out>/<stem>.json (no run directories)",
    )
    parser.add_argument("--note", default="", help="a remark on the machine or its load")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--stem",
        default="main_job",
        help="output names <stem>.json, <stem>.md, <stem>_headline.md (another configuration "
        "than the default main job gets its own, e.g. main_job_mixed)",
    )
    args = parser.parse_args(argv)
    if args.rebuild == bool(args.run_dirs):
        parser.error("give the run directories, or --rebuild without them")
    path = args.out / f"{args.stem}.json"
    try:
        if args.rebuild:
            record = json.loads(path.read_text())
            runs, note = record["runs"], record["note"]
            agg = {k: v for k, v in record.items() if k not in ("runs", "goal_points", "note")}
        else:
            runs = sorted((load_run(d) for d in args.run_dirs), key=lambda r: r["seed"])
            note = args.note
            agg = aggregate(runs)
            domains = aggregate_domains(runs)
            if domains:
                agg["domains"] = domains
    except (OSError, RunError, KeyError, json.JSONDecodeError) as err:
        print(f"record_main_job: {err}", file=sys.stderr)
        return 2
    text = markdown(runs, agg, note)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.rebuild:
        record = {"runs": runs, **agg, "goal_points": GOAL_POINTS, "note": note}
        path.write_text(json.dumps(record, indent=2))
    (args.out / f"{args.stem}.md").write_text(text)
    (args.out / f"{args.stem}_headline.md").write_text(headline(runs, agg) + "\n")
    (args.out / f"{args.stem}_table.md").write_text(table_page(runs, agg))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
