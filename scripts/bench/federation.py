"""Federation scale bench: many simulated owners end to end, and a large pool's ingestion.

Two parts, both written to ``scripts/results/federation_scale.json``:

1. End to end: ``scripts/run_main.sh`` with ``--owners`` simulated data owners (conv4, few
   local epochs, a short FREE run: the bench measures the federation, not FREE), timing the
   whole job and sampling the summed RSS of every process it starts (SuperLink, Ray actors,
   ServerApp) every 0.5 s.
2. Pool ingestion: ``--pool-models`` signed conv4 submissions (random weights) validated and
   stored one by one, then every teacher loaded once through FREE's LRU teacher cache. The
   process RSS is recorded after 100 models and at the end: teachers are loaded on demand,
   so memory stays bounded as the pool grows.

Usage::

    python -m scripts.bench.federation --preset quick   # 20 owners, 200-model pool
    python -m scripts.bench.federation --preset full    # 100 owners, 1,000-model pool
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "scripts" / "results" / "federation_scale.json"
PRESETS = {
    "quick": {"owners": 20, "pool_models": 200},
    "full": {"owners": 100, "pool_models": 1000},
}
E2E_RUN_CONFIG = (
    'local.epochs=8 fed.arch-mix="conv4" free.iterations=2 free.eval.every=2 '
    "free.eval.val-tasks=20 free.eval.test-tasks=100 free.screening.steps=5"
)

logger = logging.getLogger("bench_federation")


def rss_mb(pid: int) -> float:
    """Resident memory of one process in MiB (0 if it is gone)."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def tree_rss_mb(root: int) -> float:
    """Summed RSS of ``root`` and all its descendants, in MiB."""
    from scripts.deploy.proctree import descendants

    return sum(rss_mb(p) for p in [root, *descendants(root)])


def bench_end_to_end(owners: int, work: Path, extra: str) -> dict[str, Any]:
    """Run the main job with ``owners`` owners; return wall time, peak RSS and the summary."""
    env = dict(os.environ)
    env.update(
        FREEFED_BIN=str(Path(sys.executable).parent),
        FREEFED_OWNERS=str(owners),
        FREEFED_RUN_DIR=str(work / "run"),
    )
    cmd = [
        "bash",
        str(REPO / "scripts" / "run_main.sh"),
        "--run-config",
        f"{E2E_RUN_CONFIG} {extra}",
    ]
    logger.info("end to end: %d owners: %s", owners, " ".join(cmd))
    log = open(work / "run_main.log", "wb")  # noqa: SIM115 - closed below
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, tree_rss_mb(proc.pid))
        time.sleep(0.5)
    wall = time.perf_counter() - start
    log.close()
    summary_path = work / "run" / "out" / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    logger.info("end to end: exit %d in %.0f s, peak RSS %.0f MiB", proc.returncode, wall, peak)
    return {
        "exit_code": proc.returncode,
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak, 1),
        "accepted_models": summary.get("pool", {}).get("models"),
        "table": summary.get("table"),
        "log": str(work / "run_main.log"),
    }


def bench_pool(models: int, work: Path) -> dict[str, Any]:
    """Ingest ``models`` signed conv4 submissions, then load every teacher on demand."""
    import torch

    from client.local_training import LocalTrainingResult
    from client.owner import build_submission
    from free_common.free.teachers import TeacherCache
    from free_common.models import ModelSpec, build_model
    from free_common.submission import demo_private_key
    from server.federation import DemoKeys
    from server.pool import ModelPool
    from server.validation import Validator

    torch.set_num_threads(1)
    logging.getLogger("server.pool").setLevel(logging.WARNING)  # one line per model otherwise
    spec = ModelSpec(arch="conv4")
    pool = ModelPool(work / "pool")
    validator = Validator(keys=DemoKeys("bench"), seen=pool.has_digest)
    rss_at: dict[str, float] = {"start": round(rss_mb(os.getpid()), 1)}
    ingest = validate_s = 0.0
    model = build_model(spec)
    for i in range(models):
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.05)
        owner = f"owner-{i:04d}"
        result = LocalTrainingResult(model.state_dict(), spec, 0.9, 0.9, 1, 1, 80)
        sub = build_submission(result, owner_id=owner, private_key=demo_private_key("bench", owner))
        t0 = time.perf_counter()
        checked = validator.validate(sub, node_id=i)
        t1 = time.perf_counter()
        pool.add(checked, node_id=i, round_num=1)
        validate_s += t1 - t0
        ingest += time.perf_counter() - t0
        if i + 1 in (100, 1000) or i + 1 == models:
            rss_at[str(i + 1)] = round(rss_mb(os.getpid()), 1)
            logger.info("pool: %d models, RSS %.0f MiB", i + 1, rss_at[str(i + 1)])
    cache = TeacherCache(pool, capacity=8, device=torch.device("cpu"))
    t0 = time.perf_counter()
    for tid in pool.ids():
        cache.get(tid)
    load_s = time.perf_counter() - t0
    rss_at["after_loading_all"] = round(rss_mb(os.getpid()), 1)
    disk = sum(p.stat().st_size for p in (work / "pool").rglob("*") if p.is_file())
    pool.close()
    return {
        "pool_models": models,
        "pool_rss_mb_at": rss_at,
        "pool_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "pool_ingest_ms_per_model": round(1000 * ingest / models, 2),
        "pool_validate_ms_per_model": round(1000 * validate_s / models, 2),
        "pool_load_ms_per_teacher": round(1000 * load_s / models, 2),
        "pool_disk_mb": round(disk / 2**20, 1),
    }


def format_markdown(record: dict[str, Any]) -> str:
    """The README table of a bench record (``federation_scale.md``)."""
    rss = record.get("pool_rss_mb_at", {})
    lines = [
        f"`{record['command']}` ({record['cpu_count']} cores)",
        "",
        "| measure | value |",
        "|---|---:|",
    ]
    if "wall_s" in record:
        lines += [
            f"| simulated data owners end to end | {record['clients']} |",
            f"| accepted models | {record.get('accepted_models', '-')} |",
            f"| wall time of the whole run (s) | {record['wall_s']} |",
            f"| peak RSS of all processes (MiB) | {record['peak_rss_mb']} |",
        ]
    lines += [
        f"| pool size for ingestion (models) | {record['pool_models']} |",
        f"| ingest per model (ms: validate, fsync'd safetensors, SQLite commit) "
        f"| {record['pool_ingest_ms_per_model']} |",
        f"| load one teacher on demand (ms) | {record['pool_load_ms_per_teacher']} |",
        f"| server RSS at start / 100 / 1,000 models / after loading all (MiB) "
        f"| {rss.get('start')} / {rss.get('100')} / {rss.get('1000')} / "
        f"{rss.get('after_loading_all')} |",
        f"| pool on disk (MiB) | {record['pool_disk_mb']} |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--owners", type=int, help="override the preset's owner count")
    parser.add_argument("--pool-models", type=int, help="override the preset's pool size")
    parser.add_argument("--skip-e2e", action="store_true", help="only the pool ingestion bench")
    parser.add_argument("--run-config", default="", help="extra run config for the e2e run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    owners = args.owners or PRESETS[args.preset]["owners"]
    models = args.pool_models or PRESETS[args.preset]["pool_models"]
    record: dict[str, Any] = {
        "preset": args.preset,
        "clients": owners,
        "command": " ".join(["python -m scripts.bench.federation", *(argv or sys.argv[1:])]),
        "cpu_count": os.cpu_count(),
        "run_config": E2E_RUN_CONFIG + " " + args.run_config,
    }
    with tempfile.TemporaryDirectory(prefix="bench-federation-") as tmp:
        work = Path(tmp)
        if not args.skip_e2e:
            e2e = bench_end_to_end(owners, work, args.run_config)
            log = Path(e2e.pop("log"))  # inside the temporary directory: keep only a tail
            record.update(e2e)
            if e2e["exit_code"] != 0:
                record["log_tail"] = log.read_text(errors="replace")[-3000:]
        record.update(bench_pool(models, work))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(format_markdown(record))
    print(json.dumps(record, indent=2))
    print(f"wrote {args.out}")
    return 0 if record.get("exit_code", 0) == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
