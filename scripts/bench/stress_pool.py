"""Stress the model pool across processes: openers during ingestion, and kill -9 during add.

Two experiments on tiny synthetic models (Conv4 of width 4, about 12 KB each):

* concurrent open: one writer process adds models to a fresh pool while two other
  processes keep opening it, each time both as a would-be second writer (which must be
  refused and change nothing) and as a reader (which must load the models it lists). Every
  such ingestion is one trial (with many opens).
* kill -9: a writer process adding models is killed with SIGKILL at a random moment, then
  the next writer opens (and recovers) the pool. Every kill that lands mid-ingestion is one
  trial.

Both count the accepted models (``ModelPool.add`` returned) that were lost or could no longer
be loaded, which must be zero. Processes are forked, so a trial costs milliseconds, not an
interpreter start.

Usage: ``python -m scripts.bench.stress_pool [--open-trials 100] [--kill-trials 50]`` writes
``scripts/results/pool_stress.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from free_common.card import OwnerMetrics, encode_card, make_card
from free_common.models import ModelSpec, build_model
from free_common.submission import Submission, tensors_from_state_dict
from server.pool import ModelPool, PoolError
from server.validation import ValidatedSubmission, Validator

__all__ = ["concurrent_open", "kill_during_add", "synthetic_models"]

SPEC = ModelSpec("conv4", width=4, num_classes=5, image_size=16)
_FORK = mp.get_context("fork")


def synthetic_models(count: int, *, start: int = 0) -> list[ValidatedSubmission]:
    """``count`` validated tiny models with distinct digests (one weight differs)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        base = tensors_from_state_dict(build_model(SPEC).state_dict())
    card = make_card(
        SPEC,
        OwnerMetrics(0.9, 0.9, 80, 20, 1),
        owner_id="stress",
        key_id="",
        num_parameters=sum(int(a.size) for a in base.values()),
        num_tensors=len(base),
        software_version="stress",
    )
    card_bytes = encode_card(card)
    name = next(k for k, v in base.items() if v.dtype.kind == "f")
    validator = Validator()
    models = []
    for i in range(start, start + count):
        tensors = {k: v.copy() for k, v in base.items()}
        tensors[name].reshape(-1)[0] = i * 1e-3
        models.append(validator.validate(Submission(card_bytes, tensors), node_id=i))
    return models


def _write_models(
    root: str, models: Sequence[ValidatedSubmission], log: str, ready: Any, done: Any = None
) -> None:
    """Writer process: add every model; append each returned id to ``log`` once it returned.

    Sets ``ready`` once the pool is open and ``done`` (if given) before closing it.
    """
    with ModelPool(Path(root)) as pool:
        ready.set()
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        for i, model in enumerate(models):
            teacher_id = pool.add(model, node_id=i, round_num=1)
            os.write(fd, f"{teacher_id}\n".encode())
        if done is not None:
            done.set()


def _open_repeatedly(root: str, done: Any, out: Any, seed: int, readers: bool) -> None:
    """Opener process: until ``done``, open as a second writer, then read as a reader."""
    rng = random.Random(seed)
    stats: dict[str, Any] = {
        "opens": 0,
        "second_writer_refused": 0,
        "second_writer_opened": 0,
        "second_writer_errors": 0,
        "reader_loads": 0,
        "reader_errors": 0,
        "error_examples": [],
    }

    def note(kind: str, err: Exception) -> None:
        stats[kind] += 1
        if len(stats["error_examples"]) < 3:
            stats["error_examples"].append(f"{kind}: {err!r}"[:300])

    while not done.is_set():
        try:
            ModelPool(Path(root)).close()
            stats["second_writer_opened"] += 1
        except PoolError:
            stats["second_writer_refused"] += 1
        except Exception as err:  # noqa: BLE001 - counted: a crash on open is a finding
            note("second_writer_errors", err)
        if readers:
            try:
                with ModelPool(Path(root), readonly=True) as reader:
                    ids = reader.ids()
                    for teacher_id in ids[-2:] + rng.sample(ids, min(2, len(ids))):
                        reader.load_tensors(teacher_id)
                        stats["reader_loads"] += 1
            except Exception as err:  # noqa: BLE001 - counted: any reader failure is a finding
                note("reader_errors", err)
        stats["opens"] += 1
    out.put(stats)


def _accepted(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def _unindexed_files(root: Path) -> int:
    """Temporary or unindexed model files, as a reader sees them (before any recovery)."""
    with ModelPool(root, readonly=True) as reader:
        indexed = {e.digest for e in reader.entries()}
    return sum(
        1
        for p in (root / "models").rglob("*")
        if p.is_file() and (p.name.endswith(".tmp") or p.name.split(".")[0] not in indexed)
    )


def _audit(root: Path, accepted: Sequence[str]) -> dict[str, Any]:
    """Open the pool as the next writer (recovery) and check every accepted model loads."""
    try:
        pool = ModelPool(root)
    except PoolError as err:
        return {"lost": len(accepted), "unreachable": 0, "unopenable": str(err)[:300]}
    with pool:
        present = set(pool.ids())
        lost = [t for t in accepted if t not in present]
        unreachable = 0
        for teacher_id in accepted:
            if teacher_id in present:
                try:
                    pool.load_tensors(teacher_id)
                except PoolError:
                    unreachable += 1
        quarantined = len(pool.quarantined())
    return {
        "lost": len(lost),
        "unreachable": unreachable,
        "quarantined": quarantined,
        "leftover_files": _unindexed_files(root),
        "pool_models": len(present),
    }


def concurrent_open(
    root: Path, models: Sequence[ValidatedSubmission], *, openers: int = 2, readers: bool = True
) -> dict[str, Any]:
    """One writer process adds ``models`` to a fresh pool while ``openers`` processes open it.

    Args:
        root: pool directory (must not exist yet).
        models: what the writer adds.
        openers: opener processes.
        readers: openers also read as readers (False: only the second-writer attempt).

    Returns:
        Counts: opens during ingestion, second writers refused/opened, reader loads and
        errors, then the audit (``lost``, ``unreachable``, ...). The writer signals the end
        before it closes, so at most one open per opener comes after it closed (and may then
        rightly open as the writer).
    """
    log = root.with_name(root.name + ".accepted")
    ready, done, out = _FORK.Event(), _FORK.Event(), _FORK.Queue()
    started = time.perf_counter()
    writer = _FORK.Process(target=_write_models, args=(str(root), models, str(log), ready, done))
    writer.start()
    if not ready.wait(60):
        writer.kill()
        raise RuntimeError("the writer process did not open the pool within 60 s")
    procs = [
        _FORK.Process(target=_open_repeatedly, args=(str(root), done, out, i, readers))
        for i in range(openers)
    ]
    for p in procs:
        p.start()
    writer.join()
    done.set()  # the writer sets it before closing; again here in case it crashed
    stats = [out.get(timeout=60) for _ in procs]  # small records: no join-before-get deadlock
    for p in procs:
        p.join()
    counts = {
        key: sum(s[key] for s in stats)
        for key in (
            "opens",
            "second_writer_refused",
            "second_writer_opened",
            "second_writer_errors",
            "reader_loads",
            "reader_errors",
        )
    }
    return {
        "models": len(models),
        "writer_exit_code": writer.exitcode,
        "accepted": len(_accepted(log)),
        **counts,
        "error_examples": [e for s in stats for e in s["error_examples"]][:3],
        "seconds": time.perf_counter() - started,
        **_audit(root, _accepted(log)),
    }


def _seconds_per_add(scratch: Path, models: Sequence[ValidatedSubmission]) -> float:
    with ModelPool(scratch) as pool:
        started = time.perf_counter()
        for i, model in enumerate(models):
            pool.add(model, node_id=i, round_num=1)
    return (time.perf_counter() - started) / len(models)


def kill_during_add(
    root: Path, trials: int, *, models_per_trial: int = 10, seed: int = 0
) -> dict[str, Any]:
    """A writer adds models to ``root`` and is SIGKILLed at a random moment, ``trials`` times.

    A kill that lands after the writer finished its batch does not count: attempts go on
    until ``trials`` kills landed mid-ingestion (at most ``3 * trials`` attempts). The pool
    grows across attempts; after each kill the next writer opens it (recovery) and every
    model whose ``add`` had returned so far must be present and load.

    Returns:
        Totals and per-attempt records (models accepted before the kill, audit counts).
    """
    rng = random.Random(seed)
    models = synthetic_models(3 * trials * models_per_trial + 5)
    per_add = _seconds_per_add(root.with_name(root.name + ".calib"), models[:5])
    window = 0.6 * models_per_trial * per_add  # most kills then land mid-ingestion
    log = root.with_name(root.name + ".accepted")
    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    for attempt in range(3 * trials):
        if sum(r["killed_mid_ingestion"] for r in records) >= trials:
            break
        batch = models[5 + attempt * models_per_trial : 5 + (attempt + 1) * models_per_trial]
        before = len(_accepted(log))
        ready = _FORK.Event()
        writer = _FORK.Process(target=_write_models, args=(str(root), batch, str(log), ready))
        writer.start()
        if not ready.wait(60):
            writer.kill()
            raise RuntimeError("the writer process did not open the pool within 60 s")
        time.sleep(rng.uniform(0.0, window))
        writer.kill()
        writer.join()
        records.append(
            {
                "killed_mid_ingestion": writer.exitcode == -signal.SIGKILL
                and len(_accepted(log)) - before < len(batch),
                "accepted_before_kill": len(_accepted(log)) - before,
                "files_left_by_the_kill": _unindexed_files(root),
                **_audit(root, _accepted(log)),
            }
        )
    return {
        "attempts": len(records),
        "killed_mid_ingestion": sum(r["killed_mid_ingestion"] for r in records),
        "kills_that_left_files": sum(r["files_left_by_the_kill"] > 0 for r in records),
        "accepted": len(_accepted(log)),
        "lost": sum(r["lost"] for r in records),
        "unreachable": sum(r["unreachable"] for r in records),
        "leftover_files": sum(r["leftover_files"] for r in records),
        "kill_window_s": window,
        "seconds": time.perf_counter() - started,
        "per_trial": records,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--open-trials", type=int, default=100, help="ingestions, each into a fresh pool"
    )
    parser.add_argument("--kill-trials", type=int, default=50, help="kills mid-ingestion")
    parser.add_argument("--models", type=int, default=30, help="models per ingestion")
    parser.add_argument("--out", type=Path, default=Path("scripts/results/pool_stress.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="pool-stress-") as tmp:
        work = Path(tmp)
        models = synthetic_models(args.models)
        ingestions = [concurrent_open(work / f"open-{i}", models) for i in range(args.open_trials)]
        kills = kill_during_add(work / "kill", args.kill_trials)
    summary = {
        "concurrent_open": {
            "ingestions": len(ingestions),
            "opens_during_ingestion": sum(r["opens"] for r in ingestions),
            "second_writer_refused": sum(r["second_writer_refused"] for r in ingestions),
            "second_writer_opened": sum(r["second_writer_opened"] for r in ingestions),
            "reader_loads": sum(r["reader_loads"] for r in ingestions),
            "reader_errors": sum(r["reader_errors"] for r in ingestions),
            "second_writer_errors": sum(r["second_writer_errors"] for r in ingestions),
            "accepted": sum(r["accepted"] for r in ingestions),
            "lost": sum(r["lost"] for r in ingestions),
            "unreachable": sum(r["unreachable"] for r in ingestions),
            "ingestion_seconds": [round(r["seconds"], 3) for r in ingestions],
        },
        "kill_during_add": {k: v for k, v in kills.items() if k != "per_trial"},
        "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    c, k = summary["concurrent_open"], summary["kill_during_add"]
    print(
        f"concurrent open: {c['ingestions']} ingestions, {c['opens_during_ingestion']} opens "
        f"during them, {c['lost']} lost, {c['unreachable']} unreachable, {c['reader_errors']} "
        f"reader errors; kill -9: {k['killed_mid_ingestion']} kills mid-ingestion in "
        f"{k['attempts']} attempts, {k['lost']} lost, {k['unreachable']} unreachable "
        f"-> {args.out}"
    )
    return 0 if c["lost"] + c["unreachable"] + k["lost"] + k["unreachable"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
