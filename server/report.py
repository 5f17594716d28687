"""The run report: markdown + JSON + plots (accuracy table, meta-val curve, recovered images).

Everything is written under ``out_dir``: ``report.md``, ``report.json``,
``accuracy.png``, ``meta_val.png`` and, when the trainer exposes recovered images,
``recovered.png``. Plots use matplotlib's Agg backend (no display needed).

The "Owners" section tells every pooled model's story (:func:`owner_story`): accepted,
screened out (the failed check and its figure) or suspected (kept, with what looked
wrong), and how often FREE sampled it; submissions refused before the pool are listed
by node under "Rejected submissions".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from server.pool import headline

__all__ = [
    "AccuracyRow",
    "ReportData",
    "format_table",
    "meta_val_curve",
    "pool_kd_curve",
    "owner_story",
    "write_report",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AccuracyRow:
    """Meta-test accuracy of one method under one protocol.

    Attributes:
        method: ``"FREE"``, ``"Random"``, ...
        shots: ``shots[k] = (mean, ci95)`` as fractions.
        note: what the method is (``"mean of 10 conv4 owners"``).
        protocol: :mod:`free_common.protocols` name (``"tuned"``, ``"published"``,
            ``"proto"``), or "" when the table has one protocol only.
        settings: ``settings[k]``: the head start and rate used at ``k`` shots ("" for
            the prototype head).
    """

    method: str
    shots: dict[int, tuple[float, float]]
    note: str = ""
    protocol: str = ""
    settings: dict[int, str] = field(default_factory=dict)


@dataclass
class ReportData:
    """Everything the report shows."""

    title: str
    rows: list[AccuracyRow]
    n_way: int
    n_tasks: int
    domain_rows: dict[str, list[AccuracyRow]] = field(default_factory=dict)
    domain_tasks: int = 0
    curve: list[tuple[int, float]] = field(default_factory=list)
    pool_kd: dict[str, Any] = field(default_factory=dict)
    pool_kd_curve: list[tuple[int, float]] = field(default_factory=list)
    pool: dict[str, Any] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)
    owners: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    artefacts: dict[str, str] = field(default_factory=dict)
    recovered: npt.NDArray[np.floating[Any]] | None = None
    data: dict[str, str] = field(default_factory=dict)
    adapted: list[str] = field(default_factory=list)
    nothing_evaluated: str = ""
    verdict: dict[str, Any] | None = None


def meta_val_curve(history: Sequence[Mapping[str, Any]]) -> list[tuple[int, float]]:
    """(iteration, mean meta-val accuracy) pairs of FREE's meta-training iterations."""
    points: list[tuple[int, float]] = []
    for entry in history:
        it = entry.get("iteration")
        if entry.get("kind", "val") != "val" or entry.get("pool_kd_step", 0):
            continue
        value = entry.get("val_accuracy", entry.get("val_mean", entry.get("val")))
        if isinstance(value, Mapping):
            means = [float(v["mean"]) for v in value.values() if isinstance(v, Mapping)]
            value = float(np.mean(means)) if means else None
        if isinstance(it, int) and isinstance(value, int | float):
            points.append((it, float(value)))
    return points


def owner_story(
    models: Sequence[Mapping[str, Any]],
    verdicts: Mapping[str, Mapping[str, Any]],
    history: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """One row per pooled model: whose it is, what screening said, how often it was sampled.

    Args:
        models: ``teacher_id``, ``owner_id``, ``arch`` and ``round`` of each pooled model
            (``ModelPool.entries()``), in acceptance order.
        verdicts: teacher id -> screening verdict (``FreeResult.screening``).
        history: FREE's history; each iteration record lists its sampled ``teachers``.

    Returns:
        Rows with ``owner``, ``teacher``, ``arch``, ``round``, ``status`` (``"accepted"``,
        ``"suspected"``, ``"screened out"`` or ``"not screened"``), ``why`` (the reasons,
        each with its figure) and ``sampled`` (draws by FREE).
    """
    sampled: dict[str, int] = {}
    for record in history:
        if record.get("kind", "iteration") == "iteration":
            for teacher_id in record.get("teachers", []):
                sampled[teacher_id] = sampled.get(teacher_id, 0) + 1
    rows = []
    for model in models:
        teacher_id = str(model["teacher_id"])
        verdict = verdicts.get(teacher_id)
        if verdict is None:
            status, why = "not screened", ""
        elif not verdict.get("accepted", False):
            status, why = "screened out", str(verdict.get("reason", ""))
        elif verdict.get("suspected"):
            status = "suspected"
            why = "; ".join(str(f["reason"]) for f in verdict.get("findings", []))
        else:
            status, why = "accepted", ""
        rows.append(
            {
                "owner": str(model.get("owner_id", "")),
                "teacher": teacher_id,
                "arch": str(model.get("arch", "")),
                "round": model.get("round"),
                "status": status,
                "why": why,
                "sampled": sampled.get(teacher_id, 0),
            }
        )
    return rows


def format_table(rows: Sequence[AccuracyRow], n_way: int) -> str:
    """Markdown table: one row per method (and protocol), one column per shot (%, ± 95% CI)."""
    shots = sorted({k for r in rows for k in r.shots})
    protocols = any(r.protocol for r in rows)
    first = "| protocol | method | " if protocols else "| method | "
    head = first + " | ".join(f"{n_way}-way {k}-shot" for k in shots) + " |"
    lines = [head, "|---" * (len(shots) + 1 + protocols) + "|"]
    for r in rows:
        cells = [
            f"{100 * r.shots[k][0]:.2f} ± {100 * r.shots[k][1]:.2f}" if k in r.shots else "n/a"
            for k in shots
        ]
        name = f"{r.method} ({r.note})" if r.note else r.method
        lead = f"| {PROTOCOL_NAMES.get(r.protocol, r.protocol)} | " if protocols else "| "
        lines.append(lead + f"{name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


PROTOCOL_NAMES = {
    "tuned": "tuned",
    "published": "lr 0.01",
    "proto": "prototypes (device)",
}
"""How the table names each protocol (:data:`PROTOCOL_LEGEND` says what they are)."""

PROTOCOL_LEGEND = (
    "tuned: 10 fine-tuning steps at the rate and head start each method chose on meta-val; "
    "lr 0.01: the published fixed rate; prototypes (device): nearest class centroid of the "
    "features, no fine-tuning, what the exported prototype bundle runs"
)


def _plot_accuracy(data: ReportData, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shots = sorted({k for r in data.rows for k in r.shots})
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / max(1, len(data.rows))
    for i, row in enumerate(data.rows):
        xs = [j + i * width for j, k in enumerate(shots) if k in row.shots]
        ys = [100 * row.shots[k][0] for k in shots if k in row.shots]
        es = [100 * row.shots[k][1] for k in shots if k in row.shots]
        label = f"{row.method}, {PROTOCOL_NAMES.get(row.protocol, row.protocol)}"
        ax.bar(xs, ys, width, yerr=es, label=label if row.protocol else row.method, capsize=3)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(shots))])
    ax.set_xticklabels([f"{data.n_way}-way {k}-shot" for k in shots])
    ax.set_ylabel("meta-test accuracy (%)")
    ax.axhline(100 / data.n_way, color="grey", lw=0.8, ls="--")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pool_kd_curve(history: Sequence[Mapping[str, Any]]) -> list[tuple[int, float]]:
    """(pool distillation step, mean meta-val accuracy) pairs found in a FREE history."""
    return [
        (int(e["pool_kd_step"]), float(e["val_accuracy"]))
        for e in history
        if e.get("kind") == "val" and e.get("pool_kd_step", 0)
    ]


def _pool_kd_section(data: ReportData) -> list[str]:
    """Markdown: the stage's teachers, its start and its meta-val at every evaluation."""
    stage = data.pool_kd
    if stage.get("skipped"):
        return ["## Pool distillation", "", f"Skipped: {stage['skipped']}.", ""]
    if not stage.get("teachers"):
        return []
    scores, domains = stage.get("scores", {}), stage.get("domains", {})
    start = stage.get("start", {})
    teachers = ", ".join(
        f"`{t}` ({f'{domains[t]} ' if t in domains else ''}"
        f"{100 * scores.get(t, float('nan')):.2f}%)"
        for t in stage["teachers"]
    )
    chosen = "taken in turns from each domain's meta-val ranking" if domains else "best on meta-val"
    lines = [
        "## Pool distillation",
        "",
        f"{stage.get('steps_done', 0)} steps in {stage.get('seconds', 0.0):.0f} s from the "
        f"iteration-{start.get('iteration', '?')} model (meta-val "
        f"{100 * float(start.get('val', float('nan'))):.2f}%), distilling the features of the "
        f"{len(stage['teachers'])} pool models {chosen} (nearest centroid, "
        f"{stage.get('candidates', '?')} candidates): {teachers}."
        + (
            f" The teachers computed their targets in {stage['teacher_dtype']}."
            if stage.get("teacher_dtype")
            else ""
        )
        + (
            f" The learner trained in {stage['learner_dtype']}."
            if stage.get("learner_dtype")
            else ""
        ),
        "",
        "| step | meta-val (%) |",
        "|---|---|",
    ]
    lines += [f"| {step} | {100 * value:.2f} |" for step, value in data.pool_kd_curve]
    return [*lines, ""]


def _plot_curve(curve: Sequence[tuple[int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([c[0] for c in curve], [100 * c[1] for c in curve], marker="o")
    ax.set_xlabel("FREE iteration")
    ax.set_ylabel("meta-val accuracy (%)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_images(images: npt.NDArray[np.floating[Any]], path: Path, max_images: int = 64) -> None:
    """Grid of images (B, C, H, W) in [0, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = np.clip(np.asarray(images, dtype=np.float32)[:max_images], 0.0, 1.0)
    n = len(images)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols, rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img in zip(axes.flat, images, strict=False):
        if img.shape[0] == 1:
            ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(np.transpose(img[:3], (1, 2, 0)))
    fig.tight_layout(pad=0.1)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(data: ReportData, out_dir: Path) -> dict[str, Path]:
    """Write the markdown, JSON and plots; return their paths by name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": out_dir / "report.md",
        "json": out_dir / "report.json",
        "accuracy_plot": out_dir / "accuracy.png",
    }
    if data.rows:
        _plot_accuracy(data, paths["accuracy_plot"])
    else:
        del paths["accuracy_plot"]
    if data.curve:
        paths["meta_val_plot"] = out_dir / "meta_val.png"
        _plot_curve(data.curve, paths["meta_val_plot"])
    if data.recovered is not None and len(data.recovered):
        paths["recovered_plot"] = out_dir / "recovered.png"
        _plot_images(data.recovered, paths["recovered_plot"])
    record = asdict(data)
    record.pop("recovered")
    record["rows"] = [_row_record(r) for r in data.rows]
    record["domain_rows"] = {d: [_row_record(r) for r in rs] for d, rs in data.domain_rows.items()}
    paths["json"].write_text(json.dumps(record, indent=2, default=str))
    paths["markdown"].write_text(_markdown(data, paths))
    logger.info("report written to %s", paths["markdown"])
    return paths


def _row_record(row: AccuracyRow) -> dict[str, Any]:
    return {
        "method": row.method,
        "note": row.note,
        "protocol": row.protocol,
        "shots": {str(k): v for k, v in row.shots.items()},
        "settings": {str(k): v for k, v in row.settings.items()},
    }


def _domains_section(data: ReportData) -> list[str]:
    """One meta-test table per domain of a multi-domain run."""
    lines = [
        "## Meta-test by domain",
        "",
        f"Each domain's share of the meta-test tasks ({data.domain_tasks} each: every task is "
        "drawn within one domain, the domains in turn, as FREE's multi-domain protocol does, "
        "so the table above is the mean over domains); the tuned protocol at the rate and "
        "head each method chose on the meta-val of all domains.",
        "",
    ]
    for domain, rows in data.domain_rows.items():
        lines += [f"**{domain}**", "", format_table(rows, data.n_way), ""]
    return lines


def _owners_section(owners: Sequence[Mapping[str, Any]]) -> list[str]:
    counts: dict[str, int] = {}
    for row in owners:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    draws = sum(int(row["sampled"]) for row in owners)
    lines = [
        "## Owners",
        "",
        f"{len(owners)} pooled models: "
        + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        + f"; FREE drew teachers {draws} times.",
        "",
        "| owner | teacher | arch | status | why | sampled |",
        "|---|---|---|---|---|---:|",
    ]
    for row in owners:
        why = headline(str(row["why"]), 200).replace("|", "/")
        lines.append(
            f"| {row['owner']} | {row['teacher']} | {row['arch']} | {row['status']} | "
            f"{why} | {row['sampled']} |"
        )
    return [*lines, ""]


def _markdown(data: ReportData, paths: Mapping[str, Path]) -> str:
    lines = [f"# {data.title}", ""]
    if data.nothing_evaluated:
        lines += [f"**{data.nothing_evaluated[0].upper()}{data.nothing_evaluated[1:]}.**", ""]
    else:
        if data.verdict:
            lines += [f"**{data.verdict['line']}**", ""]
        lines += [
            f"Meta-test accuracy, {data.n_way}-way, mean ± 95% CI over {data.n_tasks} tasks:",
            "",
            format_table(data.rows, data.n_way),
            "",
            *([PROTOCOL_LEGEND + ".", ""] if any(r.protocol for r in data.rows) else []),
            f"![accuracy]({paths['accuracy_plot'].name})",
            "",
        ]
        if data.domain_rows:
            lines += _domains_section(data)
    if data.data:
        lines += ["## Data", ""] + [f"- {k}: `{v}`" for k, v in data.data.items()] + [""]
    if data.adapted:
        lines += ["## Inputs adapted to the meta-learner's", ""]
        lines += [f"- {line}" for line in data.adapted] + [""]
    if "meta_val_plot" in paths:
        lines += ["## Meta-validation", "", f"![meta-val]({paths['meta_val_plot'].name})", ""]
    lines += _pool_kd_section(data)
    if "recovered_plot" in paths:
        lines += ["## Recovered images", "", f"![recovered]({paths['recovered_plot'].name})", ""]
    lines += ["## Pool", "", "```", json.dumps(data.pool, indent=2, default=str), "```", ""]
    if data.rounds:
        lines += ["## Rounds", ""]
        for r in data.rounds:
            lines.append(
                f"- round {r['round']}: {len(r['accepted'])}/{r['asked']} accepted, "
                f"rejected {r['rejected'] or 'none'}, failed {r['failed'] or 'none'}, "
                f"missing {r['missing'] or 'none'}"
            )
        lines.append("")
    if data.rejections:
        lines += [
            "## Rejected submissions",
            "",
            "| round | node | reason | detail |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {x['round']} | {x['node_id']} | {x['reason']} | {str(x['detail'])[:120]} |"
            for x in data.rejections
        ]
        lines.append("")
    if data.failures:
        lines += ["## Failed owners", "", "| round | node | kind | detail |", "|---|---|---|---|"]
        lines += [
            f"| {x['round']} | {x['node_id']} | {x['kind']} | {headline(str(x['detail']), 160)} |"
            for x in data.failures
        ]
        lines.append("")
    if data.owners:
        lines += _owners_section(data.owners)
    elif data.excluded:
        lines += ["## Teachers excluded by screening", ""]
        lines += [f"- {k}: {v}" for k, v in data.excluded.items()]
        lines.append("")
    if data.timings:
        lines += ["## Timings (s)", ""]
        lines += [f"- {k}: {v:.1f}" for k, v in data.timings.items()]
        lines.append("")
    if data.artefacts:
        lines += ["## Artefacts", ""]
        lines += [f"- {k}: `{v}`" for k, v in data.artefacts.items()]
        lines.append("")
    return "\n".join(lines)
