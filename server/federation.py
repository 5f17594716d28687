"""The server's run, without Flower: rounds of collection, FREE over the pool, report, export.

:func:`run_federation` takes a ``collect`` callable (the ServerApp passes one that talks to
the Flower Grid; tests pass plain functions). Progress is persisted in the pool's ``meta``
table (``collected-round``, ``trained-round``) and FREE checkpoints live under
``run_dir/free/checkpoints``, so a server killed at any point resumes where it stopped: the
pool is reopened intact, collected rounds are not asked again, and meta-training continues
from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from free_common import signing
from free_common.config import FreeConfig
from free_common.data.base import ClassImages
from free_common.models import Classifier, ModelSpec, build_model
from free_common.submission import demo_private_key
from server.pool import ModelPool
from server.report import AccuracyRow, ReportData, format_table, meta_val_curve, write_report
from server.round import Reply, RoundOutcome, check_min_replies, process_round
from server.validation import KeyRegistry, Limits, Validator

__all__ = [
    "Collector",
    "FederationSettings",
    "SettingsError",
    "free_config_from_run_config",
    "DemoKeys",
    "key_registry_for",
    "run_federation",
]

logger = logging.getLogger(__name__)

# A collector asks every node for one round; returns (message id -> node id, replies).
Collector = Callable[[int], tuple[dict[str, int], list[Reply]]]
# Turns the trained pool into the final artefacts (evaluation, report, export).
Finisher = Callable[[ModelPool, Any, list[RoundOutcome]], dict[str, Any]]


class SettingsError(ValueError):
    """A federation run-config value is missing or of the wrong type."""


def _get(rc: Mapping[str, object], key: str, kind: type, default: object) -> Any:
    value = rc.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and kind is not bool:
        raise SettingsError(f"run config {key} must be {kind.__name__}, got {value!r}")
    if not isinstance(value, kind):
        raise SettingsError(f"run config {key} must be {kind.__name__}, got {value!r}")
    return value


@dataclass(frozen=True)
class FederationSettings:
    """The ``fed.*``, ``data.*``, ``out.*`` and ``export.*`` run-config keys.

    Attributes:
        num_rounds: collection rounds; FREE continues from its checkpoint after each.
        min_nodes: connected nodes to wait for before a round.
        min_replies: accepted models a round needs, else the run stops.
        round_timeout_s: how long a round waits for replies.
        node_wait_s: how long to wait for ``min_nodes`` nodes.
        key_registry: JSON key registry file ("" = no registry).
        demo_key_secret: simulation-only shared secret from which owner keys derive.
        max_model_mb: size limit of one submission.
        out_dir: run directory ("" = ``./runs/run-<run id>``).
        glyphs_path: absolute path of the glyph archive ("" = the package asset).
        export: write the ONNX export at the end.
        export_signing_key: the server's Ed25519 PEM key ("" = a fresh key next to the export).
        export_model_version: version written into the export manifests (edges refuse rollbacks).
        seed: run seed.
    """

    num_rounds: int = 1
    min_nodes: int = 2
    min_replies: int = 2
    round_timeout_s: float = 900.0
    node_wait_s: float = 300.0
    key_registry: str = ""
    demo_key_secret: str = ""
    max_model_mb: float = 64.0
    out_dir: str = ""
    glyphs_path: str = ""
    export: bool = True
    export_signing_key: str = ""
    export_model_version: int = 1
    seed: int = 0

    @classmethod
    def from_run_config(cls, rc: Mapping[str, object]) -> FederationSettings:
        """Read the federation keys of a flat Flower run config."""
        s = cls(
            num_rounds=_get(rc, "fed.num-rounds", int, cls.num_rounds),
            min_nodes=_get(rc, "fed.min-nodes", int, cls.min_nodes),
            min_replies=_get(rc, "fed.min-replies", int, cls.min_replies),
            round_timeout_s=_get(rc, "fed.round-timeout-s", float, cls.round_timeout_s),
            node_wait_s=_get(rc, "fed.node-wait-s", float, cls.node_wait_s),
            key_registry=_get(rc, "fed.key-registry", str, cls.key_registry),
            demo_key_secret=_get(rc, "fed.demo-key-secret", str, cls.demo_key_secret),
            max_model_mb=_get(rc, "fed.max-model-mb", float, cls.max_model_mb),
            out_dir=_get(rc, "out.dir", str, cls.out_dir),
            glyphs_path=_get(rc, "data.glyphs-path", str, cls.glyphs_path),
            export=_get(rc, "export.enabled", bool, cls.export),
            export_signing_key=_get(rc, "export.signing-key", str, cls.export_signing_key),
            export_model_version=_get(rc, "export.model-version", int, cls.export_model_version),
            seed=_get(rc, "seed", int, cls.seed),
        )
        if s.num_rounds < 1 or s.min_nodes < 1 or s.min_replies < 1:
            raise SettingsError("fed.num-rounds, fed.min-nodes and fed.min-replies must be >= 1")
        if s.round_timeout_s <= 0 or s.node_wait_s < 0 or s.max_model_mb <= 0:
            raise SettingsError("fed timeouts and fed.max-model-mb must be positive")
        return s


def free_config_from_run_config(rc: Mapping[str, object]) -> FreeConfig:
    """FREE settings: ``preset`` plus every ``free.*`` key that is not -1 or "" (= preset)."""
    chosen = {k: v for k, v in rc.items() if not (k.startswith("free.") and v in (-1, ""))}
    return FreeConfig.from_run_config(chosen)


class DemoKeys(KeyRegistry):
    """SIMULATION ONLY: the key of owner ``o`` is derived from a secret shared with owners."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self._secret = secret

    def __len__(self) -> int:
        return 1

    def owner_key(self, owner_id: str) -> Ed25519PublicKey | None:
        """The derived key of ``owner_id`` (no node is registered: any node may submit)."""
        if not owner_id:
            return None
        return demo_private_key(self._secret, owner_id).public_key()


def key_registry_for(settings: FederationSettings) -> KeyRegistry | None:
    """The key registry of a run: the configured file, or demo keys in simulation, or None."""
    if settings.key_registry:
        return KeyRegistry.from_file(Path(settings.key_registry))
    if settings.demo_key_secret:
        logger.warning(
            "signature check uses SIMULATION demo keys derived from fed.demo-key-secret; "
            "a deployment must register real owner keys (fed.key-registry)"
        )
        return DemoKeys(settings.demo_key_secret)
    logger.warning("no key registry: submissions are not signature-checked")
    return None


def _iterations_for_round(config: FreeConfig, round_num: int, num_rounds: int) -> int:
    """Spread the configured iterations over the rounds (cumulative target after a round)."""
    return max(1, round(config.iterations * round_num / num_rounds))


def run_federation(
    settings: FederationSettings,
    free_config: FreeConfig,
    collect: Collector,
    *,
    run_dir: Path,
    val_data: ClassImages,
    test_data: ClassImages | None,
    keys: KeyRegistry | None,
    finish: Finisher | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or resume) every round, then finish (evaluate, report, export).

    Args:
        settings: federation settings.
        free_config: FREE configuration.
        collect: asks every node for a round's submissions.
        run_dir: the run directory (pool, FREE checkpoints, report).
        val_data: meta-val split.
        test_data: meta-test split, or None.
        keys: registered owner keys, or None (no signature check).
        finish: called with the pool, the last FREE result and the round outcomes.
        progress: show FREE progress bars.

    Returns:
        A JSON-ready summary (rounds, pool counts, what ``finish`` returned).

    Raises:
        NotEnoughReplies: a round gathered fewer than ``min_replies`` accepted models.
    """
    from server.free_training import FreeTrainer

    run_dir.mkdir(parents=True, exist_ok=True)
    pool = ModelPool(run_dir / "pool")
    limits = Limits(max_model_bytes=int(settings.max_model_mb * 1024 * 1024))
    validator = Validator(limits, keys, seen=pool.has_digest)
    collected = int(pool.get_meta("collected-round", "0") or 0)
    trained = int(pool.get_meta("trained-round", "0") or 0)
    if collected or trained:
        logger.info(
            "resuming run in %s: %d rounds collected, %d trained, %d models in the pool",
            run_dir,
            collected,
            trained,
            len(pool),
        )
    outcomes: list[RoundOutcome] = []
    result: Any = None
    try:
        for r in range(1, settings.num_rounds + 1):
            if r > collected:
                logger.info("round %d/%d: asking the owners", r, settings.num_rounds)
                start = time.perf_counter()
                sent, replies = collect(r)
                outcome = process_round(r, sent, replies, validator=validator, pool=pool)
                outcomes.append(outcome)
                _append_json(run_dir / "rounds.jsonl", outcome.to_dict())
                logger.info("%s in %.1f s", outcome.summary(), time.perf_counter() - start)
                check_min_replies(outcome, settings.min_replies, len(pool))
                pool.set_meta("collected-round", str(r))
            if r > trained or r == settings.num_rounds:
                target = _iterations_for_round(free_config, r, settings.num_rounds)
                logger.info(
                    "round %d: FREE meta-training over %d pooled models up to iteration %d",
                    r,
                    len(pool),
                    target,
                )
                trainer = FreeTrainer(  # resumes from run_dir/free/checkpoints
                    free_config,
                    pool,
                    val_data=val_data,
                    test_data=test_data if r == settings.num_rounds else None,
                    work_dir=run_dir / "free",
                )
                result = trainer.train(progress=progress, iterations=target)
                pool.set_meta("trained-round", str(r))
        finished = finish(pool, result, outcomes) if finish is not None else {}
        summary: dict[str, Any] = {
            # every round of the run, also those collected before a restart
            "rounds": [json.loads(line) for line in _read_lines(run_dir / "rounds.jsonl")],
            "pool": pool.summary(),
            "free_config": free_config.to_dict(),
            "settings": dataclasses.asdict(settings),
            **finished,
        }
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        return summary
    finally:
        pool.close()


def _append_json(path: Path, record: Mapping[str, object]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def meta_learner_spec(config: FreeConfig) -> ModelSpec:
    """The spec of the meta-learner (and of the Random / Average baselines)."""
    from free_common.free.meta_learner import learner_spec

    return learner_spec(config.meta_learner)


def average_of_pool(pool: ModelPool, spec: ModelSpec) -> tuple[Classifier | None, int]:
    """FedAvg (plain mean) of the pooled models whose spec equals ``spec``.

    Returns:
        ``(model, count)``; ``(None, 0)`` when no pooled model has that spec.
    """
    ids = [e.teacher_id for e in pool.entries() if e.spec == spec]
    if not ids:
        return None, 0
    total: dict[str, np.ndarray] = {}
    for tid in ids:  # one model in memory at a time
        for name, array in pool.load_tensors(tid).items():
            if array.dtype.kind == "f":
                total[name] = total.get(name, 0) + array.astype(np.float64)
            else:
                total[name] = np.maximum(total.get(name, array), array)
    model = build_model(spec)
    state = {
        k: torch.from_numpy(
            np.asarray(v / len(ids), dtype=np.float32) if v.dtype.kind == "f" else np.asarray(v)
        )
        for k, v in total.items()
    }
    model.load_state_dict(state, strict=True)
    return model, len(ids)


def evaluate_methods(
    result: Any, pool: ModelPool, config: FreeConfig, test_data: ClassImages
) -> list[AccuracyRow]:
    """Meta-test FREE (from its result) against Random init and Average, on the same tasks."""
    from free_common.evaluation import evaluate

    ev = config.eval
    spec = meta_learner_spec(config)
    rows = [AccuracyRow("FREE", {int(k): (v["mean"], v["ci95"]) for k, v in result.test.items()})]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        from free_common.free.meta_learner import build_meta_learner

        random_init = build_meta_learner(config.meta_learner)
    average, count = average_of_pool(pool, spec)
    candidates: list[tuple[str, Classifier | None, str]] = [
        ("Random", random_init, "untrained initialisation"),
        ("Average", average, f"mean of {count} {spec.arch} owners"),
    ]
    for name, model, note in candidates:
        shots: dict[int, tuple[float, float]] = {}
        if model is not None:
            for k in ev.shots:
                logger.info(
                    "meta-test %s, %d-way %d-shot, %d tasks", name, ev.n_way, k, ev.test_tasks
                )
                r = evaluate(
                    model,
                    test_data,
                    n_way=ev.n_way,
                    k_shot=k,
                    q_query=ev.q_query,
                    n_tasks=ev.test_tasks,
                    mode="proto" if ev.mode == "proto" else "finetune",
                    seed=ev.seed,
                )
                shots[k] = (r.mean, r.ci95)
        rows.append(AccuracyRow(name, shots, note if model is not None else "no such owner"))
    return rows


def server_signing_key(path: str, out_dir: Path) -> Ed25519PrivateKey:
    """The server's Ed25519 export key: ``export.signing-key`` or a fresh one saved in ``out_dir``.

    Edge devices pin the public key, so a real deployment configures a persistent key; a
    fresh key is written next to the export (``server-ed25519.pem`` / ``.pub.hex``) with a
    warning.
    """
    if path:
        return signing.load_private_key(Path(path).read_bytes())
    pem, public = signing.generate_keypair()
    out_dir.mkdir(parents=True, exist_ok=True)
    key_path = out_dir / "server-ed25519.pem"
    key_path.write_bytes(pem)
    key_path.chmod(0o600)
    (out_dir / "server-ed25519.pub.hex").write_text(public.hex() + "\n")
    logger.warning(
        "export.signing-key not set: signed the export with a fresh key %s (key id %s); "
        "edges must pin its public key",
        key_path,
        signing.key_id(public),
    )
    return signing.load_private_key(pem)


def export_meta_learner(
    result: Any, out_dir: Path, *, signing_key: str = "", model_version: int = 1
) -> dict[str, str]:
    """Export the selected meta-learner as signed edge bundles (one per episode head).

    Uses :func:`free_common.export.export_bundle` (ONNX episode graph + signed manifest).

    Returns:
        ``{"<head>": bundle directory, "public_key": ...}``.
    """
    from free_common.export import ExportRequest, HeadConfig, export_bundle
    from free_common.export.episode_graph import HEAD_KINDS

    out_dir.mkdir(parents=True, exist_ok=True)
    key = server_signing_key(signing_key, out_dir)
    paths: dict[str, str] = {}
    name = f"free-{result.spec.arch}"
    for kind in HEAD_KINDS:
        logger.info("exporting the meta-learner to ONNX (%s head)", kind)
        request = ExportRequest(name, model_version, HeadConfig(kind))
        paths[kind] = str(export_bundle(result.model, result.spec, request, key, out_dir))
    paths["public_key"] = signing.public_raw(key.public_key()).hex()
    return paths


def make_finisher(
    run_dir: Path,
    settings: FederationSettings,
    config: FreeConfig,
    test_data: ClassImages,
    started: float,
) -> Finisher:
    """The end of a run: evaluate FREE / Random / Average, write the report and the export."""

    def finish(pool: ModelPool, result: Any, outcomes: list[RoundOutcome]) -> dict[str, Any]:
        t0 = time.perf_counter()
        rows = evaluate_methods(result, pool, config, test_data)
        artefacts = (
            export_meta_learner(
                result,
                run_dir / "export",
                signing_key=settings.export_signing_key,
                model_version=settings.export_model_version,
            )
            if settings.export
            else {}
        )
        recovered = getattr(result, "recovered_images", None)
        data = ReportData(
            title="FREE-Fed run report",
            rows=rows,
            n_way=config.eval.n_way,
            n_tasks=config.eval.test_tasks,
            curve=meta_val_curve(result.history),
            pool=pool.summary(),
            rounds=[json.loads(line) for line in _read_lines(run_dir / "rounds.jsonl")],
            rejections=[dataclasses.asdict(x) for x in pool.rejections()],
            failures=[dataclasses.asdict(x) for x in pool.failures()],
            excluded=dict(result.excluded),
            timings={
                "baseline evaluation": time.perf_counter() - t0,
                "FREE inversion": float(result.inversion_seconds),
                "total": time.time() - started,
            },
            artefacts=artefacts,
            recovered=None if recovered is None else np.asarray(recovered),
        )
        paths = write_report(data, run_dir / "report")
        table = format_table(rows, config.eval.n_way)
        return {
            "table": table,
            "rows": [dataclasses.asdict(r) for r in rows],
            "report": {k: str(v) for k, v in paths.items()},
            "export": artefacts,
            "best_iteration": result.best_iteration,
        }

    return finish


def _read_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line] if path.exists() else []
