"""The pool distillation stage's step in float32 and with bfloat16 teachers and learner.

Five Conv4 teachers (the main job's stage distils five owners) and a Conv4 learner, random
weights, a batch of random 32x32 grey images (the step's cost does not depend on the
values). Three settings alternate, ``--rounds`` times each, in one process, so all see the
same host load: everything in float32; the teachers in bfloat16 (``pool_kd.teacher_precision``);
the teachers and the learner in bfloat16 (``pool_kd.learner_precision``, mixed precision).
The report gives each one's median step time, the ratios, the teachers' forward time alone,
and the smallest cosine between a teacher's bfloat16 target and its float32 one over the
batch.

Usage: ``python -m scripts.bench.teacher_precision [--threads 2] [--rounds 11]``; writes
``scripts/results/teacher_precision.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from free_common.free.pool_distillation import PoolDistiller
from free_common.free.teachers import Teacher
from free_common.models import ModelSpec, build_model

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
FORMATS = {"float32": torch.float32, "bfloat16": torch.bfloat16}
SETTINGS = {
    "float32": (torch.float32, torch.float32),
    "bfloat16": (torch.bfloat16, torch.float32),
    "bfloat16_learner": (torch.bfloat16, torch.bfloat16),
}
"""Setting name -> (teachers' format, learner's format)."""


def _distiller(
    dtype: torch.dtype, teachers: int, image_size: int, learner: torch.dtype = torch.float32
) -> PoolDistiller:
    """A stage distiller over ``teachers`` random Conv4 teachers, all drawn from seed 0."""
    torch.manual_seed(0)
    spec = ModelSpec("conv4", image_size=image_size)
    pool = [Teacher(f"t{i}", spec, build_model(spec), tuple("abcde")) for i in range(teachers)]
    return PoolDistiller(
        build_model(spec),
        pool,
        lr=1e-3,
        shift=2,
        rng=torch.Generator().manual_seed(0),
        device=torch.device("cpu"),
        teacher_dtype=dtype,
        learner_dtype=learner,
    )


def _ms(action: Any, repeats: int) -> float:
    """Mean milliseconds of ``action()`` over ``repeats`` calls, after two warm-up calls."""
    for _ in range(2):
        action()
    started = time.perf_counter()
    for _ in range(repeats):
        action()
    return 1000 * (time.perf_counter() - started) / repeats


def measure(
    *, batch: int, teachers: int, rounds: int, repeats: int, image_size: int = 32
) -> dict[str, Any]:
    """Step and teacher-forward times per setting (``rounds`` alternating medians) and fidelity.

    Returns:
        ``{"step_ms": {setting: ms}, "teachers_ms": {setting: ms}, "step_ratio": bfloat16
        teachers / float32, "learner_step_ratio": bfloat16 learner too / bfloat16 teachers,
        "min_target_cosine": float, "settings": {...}}``.
    """
    images = torch.rand(
        batch, 1, image_size, image_size, generator=torch.Generator().manual_seed(1)
    )
    distillers = {
        name: _distiller(teacher, teachers, image_size, learner)
        for name, (teacher, learner) in SETTINGS.items()
    }
    rng = torch.Generator().manual_seed(2)
    steps: dict[str, list[float]] = {name: [] for name in SETTINGS}
    forwards: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for _ in range(rounds):
        for name, distiller in distillers.items():
            steps[name].append(_ms(lambda d=distiller: d.step(images, rng), repeats))
            forwards[name].append(_ms(lambda d=distiller: _targets(d, images), repeats))
    exact, low = (_targets(distillers[name], images) for name in FORMATS)
    pairs = zip(exact, low, strict=True)
    cosine = min(float(F.cosine_similarity(a, b, dim=1).min()) for a, b in pairs)
    step_ms = {name: statistics.median(v) for name, v in steps.items()}
    return {
        "step_ms": step_ms,
        "teachers_ms": {name: statistics.median(v) for name, v in forwards.items()},
        "step_ratio": step_ms["bfloat16"] / step_ms["float32"],
        "learner_step_ratio": step_ms["bfloat16_learner"] / step_ms["bfloat16"],
        "min_target_cosine": cosine,
        "settings": {
            "batch": batch,
            "teachers": teachers,
            "rounds": rounds,
            "repeats": repeats,
            "threads": torch.get_num_threads(),
            "native_bf16": bool(torch.cpu._is_avx512_bf16_supported()),
        },
    }


def _targets(distiller: PoolDistiller, images: Tensor) -> list[Tensor]:
    """Every teacher's float32 target (B, F_t) on the un-augmented batch (B, 1, S, S)."""
    return [
        distiller._target(extractor, teacher, images)
        for teacher, extractor in zip(distiller.teachers, distiller.extractors, strict=True)
    ]


def markdown(result: dict[str, Any]) -> str:
    """The report: one row per setting and the ratios."""
    s = result["settings"]
    lines = [
        f"`python -m scripts.bench.teacher_precision --threads {s['threads']}`: {s['teachers']} "
        f"Conv4 teachers, batch {s['batch']}, median of {s['rounds']} alternating rounds of "
        f"{s['repeats']} calls (CPU with AVX512-BF16: {s['native_bf16']}).",
        "",
        "| teachers in | learner in | stage step (ms) | teachers' forward passes (ms) |",
        "|---|---|---|---|",
    ]
    for name, (teacher, learner) in SETTINGS.items():
        if name not in result["step_ms"]:  # recorded before the setting existed
            continue
        lines.append(
            f"| {_name(teacher)} | {_name(learner)} | {result['step_ms'][name]:.1f} | "
            f"{result['teachers_ms'][name]:.1f} |"
        )
    lines += [
        "",
        f"bfloat16 teachers / float32 step time: {result['step_ratio']:.2f}"
        + (
            f"; bfloat16 learner too / bfloat16 teachers: {result['learner_step_ratio']:.2f}"
            if "learner_step_ratio" in result
            else ""
        )
        + f"; smallest cosine of a bfloat16 target to its float32 value: "
        f"{result['min_target_cosine']:.5f}.",
    ]
    return "\n".join(lines) + "\n"


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def main(argv: list[str] | None = None) -> int:
    """Command line: threads, sizes, output folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--teachers", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=11)  # the 2-core host is noisy
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = measure(
        batch=args.batch, teachers=args.teachers, rounds=args.rounds, repeats=args.repeats
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "teacher_precision.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (args.out / "teacher_precision.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
