"""Sample grid and raw-pixel difficulty of the shipped glyph benchmark.

Usage (from the repository root)::

    python scripts/datasets/glyph_report.py [--episodes 600] [--seed 0] [--out-dir scripts/results]

Writes ``glyph_samples.png`` (rows: classes of several alphabets, columns: the 20 samples of
each) and ``glyph_difficulty.json`` / ``.md``: the accuracy of a nearest-centroid classifier
on raw pixels over meta-test episodes, with mean and 95% confidence interval. NumPy only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from free_common.data.base import SPLITS, ClassImages
from free_common.data.glyphs import glyph_manifest, load_glyphs

RESULTS = Path(__file__).resolve().parents[1] / "results"
COMMAND = "python scripts/datasets/glyph_report.py"


def episode_accuracy(
    pixels: npt.NDArray[np.float32],
    by_class: list[npt.NDArray[np.int64]],
    rng: np.random.Generator,
    n_way: int,
    k_shot: int,
    q_query: int,
) -> float:
    """Accuracy of the nearest class mean (Euclidean) on one random episode.

    Args:
        pixels: raw pixels in [0, 1], (N, D).
        by_class: row indices of each class's images.
        rng: source of the episode's classes and images.
        n_way: classes per episode.
        k_shot: support images per class.
        q_query: query images per class.
    """
    classes = rng.choice(len(by_class), size=n_way, replace=False)
    support, query = [], []
    for c in classes:
        rows = rng.permutation(by_class[int(c)])[: k_shot + q_query]
        support.append(rows[:k_shot])
        query.append(rows[k_shot:])
    centroids = np.stack([pixels[s].mean(axis=0) for s in support])  # (n_way, D)
    queries = pixels[np.concatenate(query)]  # (n_way * q_query, D)
    truth = np.repeat(np.arange(n_way), q_query)
    distances = ((queries[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=-1)
    return float((distances.argmin(axis=1) == truth).mean())


def evaluate(
    data: ClassImages, episodes: int, n_way: int, k_shot: int, q_query: int, seed: int
) -> dict[str, float]:
    """Mean accuracy, its 95% confidence half-width and the std over ``episodes`` episodes."""
    rng = np.random.default_rng(seed)
    pixels = data.images.reshape(len(data.images), -1).astype(np.float32) / 255.0
    by_class = data.indices_by_class()
    scores = np.array(
        [episode_accuracy(pixels, by_class, rng, n_way, k_shot, q_query) for _ in range(episodes)]
    )
    std = float(scores.std(ddof=1)) if episodes > 1 else 0.0
    return {"mean": float(scores.mean()), "ci95": 1.96 * std / float(np.sqrt(episodes)), "std": std}


def sample_grid(
    alphabets_per_split: int, rows_per_alphabet: int
) -> tuple[npt.NDArray[np.uint8], list[str]]:
    """A mosaic of samples: one row per class, all its samples across.

    Alphabets are picked evenly from each split's list, classes evenly from each alphabet.

    Returns:
        uint8 image (rows * 34, images_per_class * 34) with a 1-pixel grey border around
        every sample, and one label per row.
    """
    manifest = glyph_manifest()
    tiles, labels = [], []
    for split in SPLITS:
        data = load_glyphs(split)
        by_class = data.indices_by_class()
        names = manifest["splits"][split]["alphabets"]
        for alphabet in names[:: max(1, len(names) // alphabets_per_split)][:alphabets_per_split]:
            classes = [i for i, n in enumerate(data.class_names) if n.startswith(f"{alphabet}/")]
            step = max(1, len(classes) // rows_per_alphabet)
            for c in classes[::step][:rows_per_alphabet]:
                images = data.images[by_class[c], 0]
                tiles.append(np.pad(images, ((0, 0), (1, 1), (1, 1)), constant_values=96))
                labels.append(f"{data.class_names[c]} ({split})")
    rows = [np.concatenate(list(row), axis=1) for row in tiles]
    return np.concatenate(rows, axis=0), labels


def write_grid(path: Path) -> None:
    """Save the sample grid as a PNG with class labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mosaic, labels = sample_grid(alphabets_per_split=4, rows_per_alphabet=2)
    height, width = mosaic.shape
    fig, ax = plt.subplots(figsize=(width / 60 + 2.5, height / 60 + 0.6), dpi=100)
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_yticks([34 * i + 16.5 for i in range(len(labels))], labels, fontsize=8)
    columns = width // 34
    ax.set_xticks([34 * i + 16.5 for i in range(columns)], [str(i + 1) for i in range(columns)])
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title("glyphs-v1: one row per class, all its samples (white ink on black, as stored)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Write the grid and the difficulty report; print the headline figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    write_grid(out / "glyph_samples.png")

    test = load_glyphs("test")
    manifest = glyph_manifest()
    results = {
        f"5-way {k}-shot": evaluate(test, args.episodes, 5, k, args.queries, args.seed)
        for k in (1, 5)
    }
    report = {
        "dataset": manifest["name"],
        "npz_sha256": manifest["npz"]["sha256"],
        "split": "test",
        "classes": test.num_classes,
        "alphabets": manifest["splits"]["test"]["alphabets"],
        "method": "nearest class mean, Euclidean distance on raw pixels scaled to [0, 1]",
        "episodes": args.episodes,
        "queries_per_class": args.queries,
        "seed": args.seed,
        "command": COMMAND,
        "results": results,
    }
    (out / "glyph_difficulty.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Glyph benchmark: raw-pixel nearest-centroid accuracy (meta-test)",
        "",
        f"`{COMMAND}` — {args.episodes} episodes, {args.queries} queries per class, "
        f"seed {args.seed}, {test.num_classes} classes of "
        f"{', '.join(report['alphabets'])}.",
        "",
        "| Task | Accuracy (mean ± 95% CI) |",
        "|---|---|",
        *(
            f"| {task} | {100 * r['mean']:.1f}% ± {100 * r['ci95']:.1f} |"
            for task, r in results.items()
        ),
        "",
    ]
    (out / "glyph_difficulty.md").write_text("\n".join(lines))
    for task, r in results.items():
        print(f"{task}: {100 * r['mean']:.1f}% +- {100 * r['ci95']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
