"""The accuracy benchmark's report: aggregation over seeds and the Markdown tables.

Everything here reads the JSON-ready report :func:`scripts.bench.accuracy.run` builds, so
the tables in ``scripts/results/accuracy*.md`` are generated, never typed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from free_common.evaluation import confidence_interval
from scripts.bench.accuracy_presets import (
    DATA_FREE_BASELINES,
    GOAL_POINTS,
    LABELS,
    METHODS,
)

__all__ = ["alignment_step", "markdown"]


def _aggregate(
    per_seed: dict[int, dict[str, dict[int, np.ndarray]]], shots: Sequence[int]
) -> dict[str, Any]:
    """Per shot and method: per-seed mean/ci95 and the aggregate over seeds."""
    table: dict[str, Any] = {}
    methods = [m for m in METHODS if all(m in r for r in per_seed.values())]
    for shot in shots:
        row: dict[str, Any] = {}
        for method in methods:
            seeds = []
            for seed, results in per_seed.items():
                mean, ci = confidence_interval(results[method][shot])
                seeds.append({"seed": seed, "mean": mean, "ci95": ci})
            pooled = np.concatenate([r[method][shot] for r in per_seed.values()])
            mean, ci = confidence_interval(pooled)
            row[method] = {
                "label": LABELS[method],
                "mean": mean,
                "ci95": ci,
                "seed_std": float(np.std([s["mean"] for s in seeds])),
                "per_seed": seeds,
            }
        free = row["free"]["mean"]
        baselines = {m: row[m]["mean"] for m in DATA_FREE_BASELINES if m in row}
        best = max(baselines, key=lambda m: baselines[m])
        gap = 100 * (free - baselines[best])
        row["_summary"] = {
            "best_data_free_baseline": best,
            "free_minus_best_baseline_points": gap,
            "goal_points": GOAL_POINTS,
            "goal_met": bool(gap >= GOAL_POINTS),
            "ceiling_minus_free_points": 100 * (row["maml"]["mean"] - free)
            if "maml" in row
            else None,
        }
        table[str(shot)] = row
    return table


def _setting_seeds(report: dict[str, Any], setting: dict[str, Any]) -> list[int]:
    """The seeds one setting aggregates (reports before per-setting seeds: the report's)."""
    seeds: list[int] = setting.get("seeds", report["seeds"])
    return seeds


def _partial(report: dict[str, Any], setting: dict[str, Any]) -> str:
    planned = report.get("preset_seeds", report["seeds"])
    done = _setting_seeds(report, setting)
    if len(done) >= len(planned):
        return ""
    listed = ", ".join(str(s) for s in done)
    return f" (PARTIAL: {len(done)} of the preset's {len(planned)} seeds: {listed})"


def _missing_settings(report: dict[str, Any]) -> list[str]:
    done = {s["name"] for s in report["settings"]}
    return [s for s in report.get("preset_settings", []) if s not in done]


def _baselines_not_run(report: dict[str, Any]) -> list[str]:
    """The data-free baselines the report's preset left out (its margin ignores them)."""
    return [m for m in DATA_FREE_BASELINES if m not in report.get("methods", METHODS)]


def alignment_step(config: dict[str, Any]) -> str:
    """FREE's meta-learner step in words, from a ``FreeConfig.to_dict()``."""
    learner = config["meta_learner"]
    if not learner["alignment"]:
        return "joint KD step (no alignment)"
    optimiser = {"sgd": "SGD", "adam": "Adam"}[learner["inner_optimizer"]]
    return (
        f"inner {optimiser} lr {learner['inner_lr']:g}, "
        f"outer gradient {learner['reptile_scale']:g}·(φ − φ')"
    )


def _table_head(shots: Sequence[int], by_seed: bool, tuned: bool = False) -> list[str]:
    """The header row and the alignment row of a setting's table."""
    columns = [f"{s}-shot" for s in shots]
    if by_seed:
        columns += [f"{s}-shot per seed" for s in shots]
    if tuned:
        columns += [f"rate {s}-shot" for s in shots]
    return ["| method | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]


def _cell(entry: dict[str, Any] | None) -> str:
    """``"62.38 ± 0.60"``: the aggregate mean and 95% CI in %, or ``n/a``."""
    return f"{100 * entry['mean']:.2f} ± {100 * entry['ci95']:.2f}" if entry else "n/a"


def _seed_means(entry: dict[str, Any] | None) -> str:
    """``"63.33 / 61.42"``: each seed's mean in %, in seed order (the seed spread)."""
    if not entry:
        return "n/a"
    return " / ".join(f"{100 * s['mean']:.2f}" for s in entry["per_seed"])


def markdown(report: dict[str, Any]) -> str:
    """Tables of ``report`` (generated from the JSON, never typed by hand)."""
    lines = [
        f"Accuracy, preset `{report['preset']}`: {report['note']}",
        "",
        f"FREE's alignment step: {alignment_step(report['free_config'])}.",
        "",
    ]
    missing = _missing_settings(report)
    if missing:
        lines += [f"PARTIAL: not run yet: the {', '.join(missing)} pool setting(s).", ""]
    methods = [m for m in METHODS if m in report.get("methods", METHODS)]
    skipped = [LABELS[m] for m in METHODS if m not in methods]
    if skipped:
        lines += [f"Not run in this preset: {', '.join(skipped)}.", ""]
    partial_baselines = bool(_baselines_not_run(report))
    for setting in report["settings"]:
        n_seeds = len(_setting_seeds(report, setting))
        lines += [
            f"**{setting['name']}** pool ({'+'.join(setting['archs'])}, "
            f"{setting['teachers']} teachers; Average over {setting['average_teachers']} "
            f"Conv4 teachers), 5-way, {report['test_tasks']} meta-test tasks x "
            f"{n_seeds} seed(s){_partial(report, setting)}; "
            "mean ± 95% CI in %:",
            "",
            *_protocol_block(report, setting["results"], methods, n_seeds > 1, partial_baselines),
        ]
        tuned = setting.get("tuned")
        if tuned:
            seeds = tuned["seeds"]
            missing_seeds = sorted(set(_setting_seeds(report, setting)) - set(seeds))
            lines += [
                f"Same pool and tasks, each method fine-tuned at its own rate, chosen on "
                f"meta-val ({report['lr_val_tasks']} tasks per rate) from "
                f"{', '.join(f'{lr:g}' for lr in report['finetune_lrs'])}; "
                f"{len(seeds)} seed(s): {', '.join(str(x) for x in seeds)}"
                + (
                    f" (measured before this protocol: seed(s) "
                    f"{', '.join(str(x) for x in missing_seeds)})"
                    if missing_seeds
                    else ""
                )
                + "; chosen rate per seed in the last columns:",
                "",
                *_protocol_block(
                    report, tuned["results"], methods, False, partial_baselines, tuned["lrs"]
                ),
            ]
    return "\n".join(lines) + "\n"


def _protocol_block(
    report: dict[str, Any],
    results: dict[str, Any],
    methods: Sequence[str],
    by_seed: bool,
    partial_baselines: bool,
    rates: dict[str, Any] | None = None,
) -> list[str]:
    """One protocol's table and its goal lines (``rates``: the tuned protocol's choices)."""
    shots = report["shots"]
    lines = _table_head(shots, by_seed, tuned=rates is not None)
    for method in methods:
        cells = [_cell(results[str(shot)].get(method)) for shot in shots]
        if by_seed:
            cells += [_seed_means(results[str(shot)].get(method)) for shot in shots]
        if rates is not None:
            cells += [_chosen_rates(rates, method, shot) for shot in shots]
        lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    protocol = ", rates tuned on meta-val" if rates is not None else ""
    for shot in shots:
        s = results[str(shot)]["_summary"]
        ceiling = s["ceiling_minus_free_points"]
        best = LABELS[s["best_data_free_baseline"]]
        lines.append(
            f"\n{shot}-shot{protocol}: FREE − best data-free baseline"
            f"{' run here' if partial_baselines else ''} ({best})"
            f" = {s['free_minus_best_baseline_points']:+.2f} points (goal ≥ +{GOAL_POINTS}: "
            f"{'met' if s['goal_met'] else 'NOT met'}"
            f"{' against these baselines' if partial_baselines else ''}); ceiling − FREE = "
            f"{'n/a' if ceiling is None else f'{ceiling:.2f}'} points."
        )
    lines.append("")
    return lines


def _chosen_rates(rates: dict[str, Any], method: str, shot: int) -> str:
    """``"0.1 / 0.03"``: the rate chosen for ``method`` at ``shot``, per seed in seed order."""
    chosen = [
        by_method[method][str(shot)]
        for _, by_method in sorted(rates.items(), key=lambda r: int(r[0]))
        if method in by_method
    ]
    return " / ".join(f"{lr:g}" for lr in chosen) or "n/a"
