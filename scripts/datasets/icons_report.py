"""Sample grid and raw-pixel difficulty of the shipped icon benchmark.

Usage (from the repository root)::

    python -m scripts.datasets.icons_report [--episodes 600] [--queries 5] [--seed 0]

Writes ``icons_samples.png`` (rows: classes of each split, columns: every image of the
class) and ``icons_difficulty.json`` / ``.md``: the accuracy of a nearest-centroid classifier
on raw pixels over meta-test episodes, mean and 95% confidence interval. The smallest class
holds 10 images, so 5-shot episodes take 5 queries per class (1-shot the same 5).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

from free_common.data.base import SPLITS
from free_common.data.icons import icon_manifest, load_icons
from scripts.datasets.glyph_report import evaluate

RESULTS = Path(__file__).resolve().parents[1] / "results"
COMMAND = "python -m scripts.datasets.icons_report"
_TILE = 34  # a 32 px image and a 1 px border on each side


def sample_grid(rows_per_split: int, columns: int) -> tuple[npt.NDArray[np.uint8], list[str]]:
    """A mosaic: one row per class (evenly spread over each split), its images across.

    Returns:
        uint8 RGB image (rows * 34, columns * 34, 3) with a white border around every
        sample (rows shorter than ``columns`` end in white), and one label per row.
    """
    tiles, labels = [], []
    for split in SPLITS:
        data = load_icons(split)
        by_class = data.indices_by_class()
        step = max(1, data.num_classes // rows_per_split)
        for c in range(0, data.num_classes, step)[:rows_per_split]:
            images = data.images[by_class[c][:columns]].transpose(0, 2, 3, 1)
            row = np.full((_TILE, columns * _TILE, 3), 255, np.uint8)
            for i, image in enumerate(images):
                row[1 : _TILE - 1, i * _TILE + 1 : (i + 1) * _TILE - 1] = image
            tiles.append(row)
            labels.append(f"{data.class_names[c]} ({split}, {len(by_class[c])})")
    return np.concatenate(tiles, axis=0), labels


def write_grid(path: Path, rows_per_split: int = 8, columns: int = 20) -> None:
    """Save the sample grid as a PNG with class labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mosaic, labels = sample_grid(rows_per_split, columns)
    height, width = mosaic.shape[:2]
    fig, ax = plt.subplots(figsize=(width / 55 + 3.5, height / 55 + 0.7), dpi=100)
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_yticks([_TILE * i + _TILE / 2 for i in range(len(labels))], labels, fontsize=8)
    ax.set_xticks([_TILE * i + _TILE / 2 for i in range(columns)],
                  [str(i + 1) for i in range(columns)])  # fmt: skip
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title("icons-v1: one row per class (image count), one image per theme design")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Write the grid and the difficulty report; print the headline figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    write_grid(out / "icons_samples.png")

    test = load_icons("test")
    manifest = icon_manifest()
    results = {
        f"5-way {k}-shot": evaluate(test, args.episodes, 5, k, args.queries, args.seed)
        for k in (1, 5)
    }
    report = {
        "dataset": manifest["name"],
        "npz_sha256": manifest["npz"]["sha256"],
        "split": "test",
        "classes": test.num_classes,
        "images": len(test.images),
        "method": "nearest class mean, Euclidean distance on raw RGB pixels scaled to [0, 1]",
        "episodes": args.episodes,
        "queries_per_class": args.queries,
        "seed": args.seed,
        "command": COMMAND,
        "results": results,
    }
    (out / "icons_difficulty.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Icon benchmark: raw-pixel nearest-centroid accuracy (meta-test)",
        "",
        f"`{COMMAND}` — {args.episodes} episodes, {args.queries} queries per class, "
        f"seed {args.seed}, {test.num_classes} meta-test classes ({len(test.images)} images).",
        "",
        "| Task | Accuracy (mean ± 95% CI) |",
        "|---|---|",
        *(
            f"| {task} | {100 * r['mean']:.1f}% ± {100 * r['ci95']:.1f} |"
            for task, r in results.items()
        ),
        "",
    ]
    (out / "icons_difficulty.md").write_text("\n".join(lines))
    for task, r in results.items():
        print(f"{task}: {100 * r['mean']:.1f}% +- {100 * r['ci95']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
