"""The main job's CPU kernels under glibc's default malloc and with the thresholds run_main.sh sets.

glibc returns a freed block above ``M_MMAP_THRESHOLD`` to the kernel (``munmap``), and trims
the top of its heap once ``M_TRIM_THRESHOLD`` bytes are free; a tensor of a few MiB
allocated and freed at every layer of every step then comes back as fresh pages that the
kernel must fault in and zero. ``scripts/run_main.sh`` sets both thresholds to 256 MiB
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, mallopt(3)); this benchmark times
the work the main job repeats, in child processes started with and without them (glibc
reads them when a process starts), the two settings alternating ``--rounds`` times:

- ``finetune_1shot`` / ``finetune_5shot``: one meta-test task of the comparison (10 SGD
  steps of a Conv4-32 on a 5-way glyph task, then its 75 queries), one thread, ms per task;
- ``proto_5shot``: one nearest-centroid task (the device's protocol), one thread;
- ``stage_step``: one pool distillation step (5 Conv4 teachers in bfloat16, batch 128),
  two threads, in the process's main thread;
- ``stage_step_thread``: the same step run from a second thread, as Flower's simulation
  runs the ServerApp.

Usage: ``python -m scripts.bench.allocator [--rounds 5] [--tasks 60] [--steps 20]``; writes
``scripts/results/allocator.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from free_common.data.episodes import Episode, EpisodeSampler
from free_common.data.glyphs import load_glyphs
from free_common.evaluation import (
    _channels_last,
    _finetune_accuracy,
    _proto_accuracy,
    evaluation_copy,
)
from free_common.models import ModelSpec, build_model
from scripts.bench.teacher_precision import _distiller

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
THRESHOLD = 256 * 1024 * 1024
"""The bytes ``scripts/run_main.sh`` gives both thresholds."""
SETTINGS: dict[str, dict[str, str]] = {
    "glibc default": {},
    "run_main.sh": {
        "MALLOC_MMAP_THRESHOLD_": str(THRESHOLD),
        "MALLOC_TRIM_THRESHOLD_": str(THRESHOLD),
    },
}
"""Setting name -> the environment variables its child process starts with."""
MEASURES = ("finetune_1shot", "finetune_5shot", "proto_5shot", "stage_step", "stage_step_thread")


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    return env | extra


def measure_here(*, tasks: int, steps: int, batch: int) -> dict[str, float]:
    """Milliseconds per task or step of each of :data:`MEASURES`, in this process."""
    test = load_glyphs("test")
    out: dict[str, float] = {}
    torch.set_num_threads(1)
    torch.manual_seed(0)
    learner = evaluation_copy(build_model(ModelSpec("conv4", image_size=32)), 5, seed=0)
    for k_shot in (1, 5):
        sampler = EpisodeSampler(test, n_way=5, k_shot=k_shot, q_query=15, seed=0)
        episodes = [_channels_last(e) for e in sampler.episodes(tasks)]

        def finetune(eps: list[Episode] = episodes) -> None:
            for e in eps:
                _finetune_accuracy(learner, e, steps=10, lr=0.1, head="zero")

        out[f"finetune_{k_shot}shot"] = _ms(finetune, tasks)
        if k_shot == 5:

            def proto(eps: list[Episode] = episodes) -> None:
                for e in eps:
                    _proto_accuracy(learner, e, 5)

            out["proto_5shot"] = _ms(proto, tasks)
    torch.set_num_threads(2)
    distiller = _distiller(torch.bfloat16, 5, 32)
    images = torch.rand(batch, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    rng = torch.Generator().manual_seed(2)

    def stage() -> None:
        for _ in range(steps):
            distiller.step(images, rng)

    out["stage_step"] = _ms(stage, steps)
    found: dict[str, float] = {}
    worker = threading.Thread(target=lambda: found.update(ms=_ms(stage, steps)))
    worker.start()
    worker.join()
    out["stage_step_thread"] = found["ms"]
    return out


def _ms(action: Callable[[], None], count: int) -> float:
    """Milliseconds per unit of ``action()`` (``count`` units), after one warm-up call."""
    action()
    started = time.perf_counter()
    action()
    return 1000 * (time.perf_counter() - started) / count


def measure(*, rounds: int, tasks: int, steps: int, batch: int) -> dict[str, Any]:
    """Each setting's median per measure over ``rounds`` alternating child processes.

    Returns:
        ``{"ms": {setting: {measure: ms}}, "ratio": {measure: run_main.sh / default},
        "settings": {...}}``.
    """
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in SETTINGS}
    argv = ["--child", "--tasks", str(tasks), "--steps", str(steps), "--batch", str(batch)]
    for _ in range(rounds):
        for name, extra in SETTINGS.items():
            done = subprocess.run(
                [sys.executable, "-m", "scripts.bench.allocator", *argv],
                env=_child_env(extra),
                capture_output=True,
                text=True,
                check=True,
                cwd=Path(__file__).resolve().parents[2],
            )
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    ms = {
        name: {m: statistics.median(r[m] for r in found) for m in MEASURES}
        for name, found in runs.items()
    }
    ratio = {m: ms["run_main.sh"][m] / ms["glibc default"][m] for m in MEASURES}
    return {
        "ms": ms,
        "ratio": ratio,
        "settings": {"rounds": rounds, "tasks": tasks, "steps": steps, "batch": batch},
    }


def markdown(result: dict[str, Any]) -> str:
    """The report: one row per measure, both settings and their ratio."""
    s = result["settings"]
    lines = [
        f"`python -m scripts.bench.allocator --rounds {s['rounds']} --tasks {s['tasks']} "
        f"--steps {s['steps']}`: median over {s['rounds']} alternating child processes per "
        "setting; ms per task (fine-tuning and nearest centroid, one thread) or per pool "
        f"distillation step (batch {s['batch']}, two threads).",
        "",
        "| measure | glibc default (ms) | run_main.sh thresholds (ms) | ratio |",
        "|---|---|---|---|",
    ]
    for m in MEASURES:
        lines.append(
            f"| {m} | {result['ms']['glibc default'][m]:.1f} | "
            f"{result['ms']['run_main.sh'][m]:.1f} | {result['ratio'][m]:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line: rounds and sizes, output folder; ``--child`` measures in this process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        found = measure_here(tasks=args.tasks, steps=args.steps, batch=args.batch)
        print(json.dumps(found))
        return 0
    result = measure(rounds=args.rounds, tasks=args.tasks, steps=args.steps, batch=args.batch)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "allocator.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (args.out / "allocator.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
