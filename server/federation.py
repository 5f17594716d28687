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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from free_common import signing
from free_common.config import FreeConfig
from free_common.data.base import ClassImages, DatasetError
from free_common.data.sources import DataSource
from free_common.evaluation import HEADS
from free_common.free.teachers import Teacher
from free_common.models import Classifier, ModelSpec
from free_common.protocols import PROTOCOLS, ProtocolSettings
from free_common.run_config import DEFAULTS, RunConfig, RunConfigError
from free_common.submission import demo_private_key
from server.comparison import (
    SHIP_CHOICES,
    Candidate,
    MethodResult,
    Verdict,
    average_candidate,
    best_owner_candidate,
    by_domain,
    compare,
    random_candidate,
    verdict,
)
from server.pool import ModelPool
from server.report import (
    AccuracyRow,
    ReportData,
    format_table,
    meta_val_curve,
    owner_story,
    pool_kd_curve,
    write_report,
)
from server.round import Reply, RoundOutcome, check_min_replies, process_round
from server.validation import KeyRegistry, Limits, Validator

__all__ = [
    "NOTHING_EVALUATED",
    "Collector",
    "FederationSettings",
    "SettingsError",
    "free_config_from_run_config",
    "DemoKeys",
    "key_registry_for",
    "fit_evaluation",
    "load_evaluation_data",
    "run_federation",
]

logger = logging.getLogger(__name__)

# A collector asks every node for one round; returns (message id -> node id, replies).
Collector = Callable[[int], tuple[dict[str, int], list[Reply]]]
# Turns the trained pool into the final artefacts (evaluation, report, export).
Finisher = Callable[[ModelPool, Any, list[RoundOutcome]], dict[str, Any]]


class SettingsError(ValueError):
    """A federation run-config value is missing, of the wrong type or out of range."""


def _words(text: str) -> tuple[str, ...]:
    """``"tuned, proto"`` -> ``("tuned", "proto")``."""
    return tuple(w.strip() for w in text.split(",") if w.strip())


def _rates(text: str) -> tuple[float, ...]:
    """``"0.03,0.1"`` -> ``(0.03, 0.1)``.

    Raises:
        SettingsError: a word that is not a number.
    """
    try:
        return tuple(float(w) for w in _words(text))
    except ValueError as err:
        raise SettingsError(
            f"compare.lrs: {text!r} is not a comma-separated list of rates"
        ) from err


@dataclass(frozen=True)
class FederationSettings:
    """The ``fed.*``, ``data.*``, ``out.*`` and ``export.*`` run-config keys.

    Defaults are those of :data:`free_common.run_config.KEYS` (the same as
    ``pyproject.toml``'s).

    Attributes:
        num_rounds: collection rounds; FREE continues from its checkpoint after each.
        min_nodes: connected nodes to wait for before a round.
        min_replies: accepted models a round needs, else the run stops.
        round_timeout_s: how long a round waits for replies.
        node_wait_s: how long to wait for ``min_nodes`` nodes.
        key_registry: JSON key registry file ("" = no registry).
        demo_key_secret: simulation-only shared secret from which owner keys derive.
        max_model_mb: size limit of one submission.
        max_input_scale: a model whose input side differs from the meta-learner's by more
            than this factor is rejected (reason ``input``); closer ones are adapted.
        out_dir: run directory ("" = ``./runs/run-<run id>``).
        assets_dir: absolute folder of the embedded benchmarks' archives ("" = the package's).
        val_source: the meta-val source (``data.val``; :mod:`free_common.data.sources`).
        test_source: the meta-test source (``data.test``).
        export: write the ONNX export at the end.
        export_signing_key: the server's Ed25519 PEM key ("" = a fresh key next to the export).
        export_model_version: version written into the export manifests (edges refuse rollbacks).
        export_ship: ``"best"`` (the export carries the best method on meta-val) or
            ``"free"`` (FREE's meta-learner whatever the comparison says).
        compare_protocols: meta-test protocols of the final comparison
            (:mod:`free_common.protocols`).
        compare_val_tasks: meta-val tasks per grid point of the tuned protocol.
        compare_lrs: the tuned protocol's fine-tuning rates.
        compare_heads: the tuned protocol's head starts.
        compare_best_owner: include the best single owner's model in the comparison.
        compare_workers: worker processes of the final comparison on CPU (0 = one per
            usable core, 1 = all in the server process; :mod:`server.workers`).
        preset: the FREE preset named by the run config (recorded with the results).
        seed: run seed.
    """

    num_rounds: int = DEFAULTS.get_int("fed.num-rounds")
    min_nodes: int = DEFAULTS.get_int("fed.min-nodes")
    min_replies: int = DEFAULTS.get_int("fed.min-replies")
    round_timeout_s: float = DEFAULTS.get_float("fed.round-timeout-s")
    node_wait_s: float = DEFAULTS.get_float("fed.node-wait-s")
    key_registry: str = DEFAULTS.get_str("fed.key-registry")
    demo_key_secret: str = DEFAULTS.get_str("fed.demo-key-secret")
    max_model_mb: float = DEFAULTS.get_float("fed.max-model-mb")
    max_input_scale: float = DEFAULTS.get_float("fed.max-input-scale")
    out_dir: str = DEFAULTS.get_str("out.dir")
    assets_dir: str = DEFAULTS.get_str("data.assets-dir")
    val_source: str = DEFAULTS.get_str("data.val")
    test_source: str = DEFAULTS.get_str("data.test")
    export: bool = DEFAULTS.get_bool("export.enabled")
    export_signing_key: str = DEFAULTS.get_str("export.signing-key")
    export_model_version: int = DEFAULTS.get_int("export.model-version")
    export_ship: str = DEFAULTS.get_str("export.ship")
    compare_protocols: tuple[str, ...] = _words(DEFAULTS.get_str("compare.protocols"))
    compare_val_tasks: int = DEFAULTS.get_int("compare.val-tasks")
    compare_lrs: tuple[float, ...] = _rates(DEFAULTS.get_str("compare.lrs"))
    compare_heads: tuple[str, ...] = _words(DEFAULTS.get_str("compare.heads"))
    compare_best_owner: bool = DEFAULTS.get_bool("compare.best-owner")
    compare_workers: int = DEFAULTS.get_int("compare.workers")
    preset: str = DEFAULTS.get_str("preset")
    seed: int = DEFAULTS.get_int("seed")

    def __post_init__(self) -> None:
        """Check ranges."""
        if self.num_rounds < 1 or self.min_nodes < 1 or self.min_replies < 1:
            raise SettingsError("fed.num-rounds, fed.min-nodes and fed.min-replies must be >= 1")
        if self.round_timeout_s <= 0 or self.node_wait_s < 0 or self.max_model_mb <= 0:
            raise SettingsError("fed timeouts and fed.max-model-mb must be positive")
        if self.max_input_scale < 1:
            raise SettingsError(f"fed.max-input-scale must be >= 1, got {self.max_input_scale}")
        if self.export_ship not in SHIP_CHOICES:
            raise SettingsError(
                f"export.ship must be one of {', '.join(SHIP_CHOICES)}, got {self.export_ship!r}"
            )
        try:
            self.protocol_settings(test_tasks=1, test_seed=0)
        except ValueError as err:
            raise SettingsError(f"compare.*: {err}") from err
        unknown = sorted(set(self.compare_heads) - set(HEADS))
        if unknown or not self.compare_heads:
            raise SettingsError(
                f"compare.heads: {list(self.compare_heads)}, expected some of {', '.join(HEADS)}"
            )
        if self.compare_workers < 0:
            raise SettingsError(
                f"compare.workers must be >= 0 (0 = one per core), got {self.compare_workers}"
            )
        if not self.compare_lrs or min(self.compare_lrs) <= 0:
            raise SettingsError(f"compare.lrs must be positive rates, got {self.compare_lrs}")

    def protocol_settings(self, *, test_tasks: int, test_seed: int) -> ProtocolSettings:
        """The final comparison's protocols (meta-test task count and seed from FREE's eval).

        On a split of several domains every task is drawn within one domain, the domains
        in turn (FREE's multi-domain protocol; :func:`server.comparison.by_domain`).
        """
        return ProtocolSettings(
            test_tasks=test_tasks,
            test_seed=test_seed,
            val_tasks=self.compare_val_tasks,
            lrs=self.compare_lrs,
            heads=self.compare_heads,
            protocols=self.compare_protocols,
            by_domain=True,
        )

    @classmethod
    def from_run_config(cls, rc: Mapping[str, object] | RunConfig) -> FederationSettings:
        """Read the federation keys of a flat Flower run config.

        Raises:
            SettingsError: a value of the wrong type or out of range.
        """
        try:
            c = rc if isinstance(rc, RunConfig) else RunConfig(rc)
            return cls(
                num_rounds=c.get_int("fed.num-rounds"),
                min_nodes=c.get_int("fed.min-nodes"),
                min_replies=c.get_int("fed.min-replies"),
                round_timeout_s=c.get_float("fed.round-timeout-s"),
                node_wait_s=c.get_float("fed.node-wait-s"),
                key_registry=c.get_str("fed.key-registry"),
                demo_key_secret=c.get_str("fed.demo-key-secret"),
                max_model_mb=c.get_float("fed.max-model-mb"),
                max_input_scale=c.get_float("fed.max-input-scale"),
                out_dir=c.get_str("out.dir"),
                assets_dir=c.get_str("data.assets-dir"),
                val_source=str(c.source("data.val")),
                test_source=str(c.source("data.test")),
                export=c.get_bool("export.enabled"),
                export_signing_key=c.get_str("export.signing-key"),
                export_model_version=c.get_int("export.model-version"),
                export_ship=c.get_str("export.ship"),
                compare_protocols=_words(c.get_str("compare.protocols")),
                compare_val_tasks=c.get_int("compare.val-tasks"),
                compare_lrs=_rates(c.get_str("compare.lrs")),
                compare_heads=_words(c.get_str("compare.heads")),
                compare_best_owner=c.get_bool("compare.best-owner"),
                compare_workers=c.get_int("compare.workers"),
                preset=c.get_str("preset"),
                seed=c.get_int("seed"),
            )
        except RunConfigError as err:
            raise SettingsError(str(err)) from err


def free_config_from_run_config(rc: Mapping[str, object] | RunConfig) -> FreeConfig:
    """FREE settings: ``preset``, every ``free.*`` key that is not -1 or "", and the input.

    See :meth:`free_common.run_config.RunConfig.free_config`.
    """
    return (rc if isinstance(rc, RunConfig) else RunConfig(rc)).free_config()


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
    val_data: ClassImages | None,
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
        val_data: meta-val split, or None: FREE is then skipped (nothing to select with).
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
    limits = Limits(max_model_bytes=int(settings.max_model_mb * 1024 * 1024)).around_input(
        free_config.meta_learner.image_size, settings.max_input_scale
    )
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
            if val_data is None:
                logger.warning(
                    "round %d: FREE skipped: no meta-val data (data.val = none) to select a "
                    "meta-learner with; the pool holds %d models",
                    r,
                    len(pool),
                )
            elif r > trained or r == settings.num_rounds:
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
                    test_data=None,  # the finisher meta-tests FREE beside the baselines
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


def free_note(result: Any) -> str:
    """Where the shipped FREE model comes from: its iteration, and its pool distillation step."""
    note = f"best meta-val iteration {result.best_iteration}"
    step = getattr(result, "best_pool_kd_step", 0)
    return f"{note}, pool distillation step {step}" if step else note


def comparison_candidates(
    result: Any,
    pool: ModelPool,
    settings: FederationSettings,
    config: FreeConfig,
    val_data: ClassImages | None,
) -> list[Candidate]:
    """FREE (from its result; None when it did not train), Random, Average, the best owner."""
    spec = meta_learner_spec(config)
    if result is None:
        free = Candidate("FREE", None, None, "not trained: no meta-val data")
    else:
        free = Candidate("FREE", result.model, result.spec, free_note(result))
    same = [e.teacher_id for e in pool.entries() if e.spec == spec]
    candidates = [
        free,
        random_candidate(spec, config.seed),
        average_candidate(_Subset(pool, same), spec),
    ]
    if settings.compare_best_owner and val_data is not None:
        ev = config.eval
        excluded = set(getattr(result, "excluded", {}) or {})
        candidates.append(
            best_owner_candidate(
                _Subset(pool, [t for t in pool.ids() if t not in excluded]),
                val_data,
                spec,
                n_way=ev.n_way,
                k_shot=min(ev.shots),
                q_query=ev.q_query,
                n_tasks=settings.compare_val_tasks,
                seed=ev.seed + 1,
            )
        )
    return candidates


class _Subset:
    """A :class:`~free_common.free.teachers.TeacherSource` over some of a pool's ids."""

    def __init__(self, pool: ModelPool, ids: list[str]) -> None:
        self._pool, self._ids = pool, ids

    def ids(self) -> list[str]:
        return list(self._ids)

    def load(self, teacher_id: str) -> Teacher:
        return self._pool.load(teacher_id)


def compare_methods(
    candidates: list[Candidate],
    settings: FederationSettings,
    config: FreeConfig,
    val_data: ClassImages | None,
    test_data: ClassImages,
) -> tuple[list[MethodResult], list[AccuracyRow]]:
    """Meta-test every candidate on the same tasks; the report's rows (method x protocol).

    Without meta-val data the tuned protocol cannot choose a rate: only ``published`` and
    ``proto`` run then.
    """
    ev = config.eval
    protocols = settings.compare_protocols
    if val_data is None:
        protocols = tuple(p for p in protocols if p != "tuned") or ("proto",)
    ps = dataclasses.replace(
        settings.protocol_settings(test_tasks=ev.test_tasks, test_seed=ev.seed),
        protocols=protocols,
    )
    methods = compare(
        candidates,
        val_data if val_data is not None else test_data,  # unused without "tuned"
        test_data,
        n_way=ev.n_way,
        shots=ev.shots,
        q_query=ev.q_query,
        settings=ps,
        workers=settings.compare_workers,
    )
    return methods, accuracy_rows(methods, protocols)


def accuracy_rows(methods: list[MethodResult], protocols: Sequence[str]) -> list[AccuracyRow]:
    """The report's rows (protocol x method, in :data:`PROTOCOLS` order) of some results."""
    rows: list[AccuracyRow] = []
    for protocol in PROTOCOLS:
        if protocol not in protocols:
            continue
        for method in methods:
            by_shot = method.results.get(protocol, {})
            rows.append(
                AccuracyRow(
                    method.name,
                    {k: (r.result.mean, r.result.ci95) for k, r in by_shot.items()},
                    method.note,
                    protocol=protocol,
                    settings={
                        k: ("" if r.lr is None else f"{r.head} head, lr {r.lr:g}")
                        for k, r in by_shot.items()
                    },
                )
            )
    return rows


def compare_domains(methods: list[MethodResult]) -> dict[str, list[AccuracyRow]]:
    """Each domain's rows in a multi-domain run: its share of the comparison's tasks.

    The protocols are those that ran (without meta-val data, no ``tuned``). Empty for one
    domain (:func:`server.comparison.by_domain`).
    """
    ran = {protocol for method in methods for protocol in method.results}
    return {domain: accuracy_rows(rows, tuple(ran)) for domain, rows in by_domain(methods).items()}


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


def export_model(
    model: Classifier,
    spec: ModelSpec,
    out_dir: Path,
    *,
    signing_key: str = "",
    model_version: int = 1,
    selection: Verdict | None = None,
) -> dict[str, str]:
    """Export ``model`` as signed edge bundles (one per episode head).

    Uses :func:`free_common.export.export_bundle` (ONNX episode graph + signed manifest).
    Every release is named ``free-<arch>`` so that edges see one model whose versions only
    grow; ``selection`` (the meta-val comparison and which method's weights ship) is signed
    into every manifest.

    Returns:
        ``{"<head>": bundle directory, "public_key": ...}``.
    """
    from free_common.export import ExportRequest, HeadConfig, export_bundle
    from free_common.export.episode_graph import HEAD_KINDS

    out_dir.mkdir(parents=True, exist_ok=True)
    key = server_signing_key(signing_key, out_dir)
    paths: dict[str, str] = {}
    name = f"free-{spec.arch}"  # the release's name, whichever method's weights it carries
    note = "" if selection is None else json.dumps(selection.to_dict(), sort_keys=True)
    for kind in HEAD_KINDS:
        logger.info("exporting %s to ONNX (%s head)", name, kind)
        request = ExportRequest(name, model_version, HeadConfig(kind), selection_json=note)
        paths[kind] = str(export_bundle(model, spec, request, key, out_dir))
    paths["public_key"] = signing.public_raw(key.public_key()).hex()
    return paths


NOTHING_EVALUATED = "nothing was evaluated: no meta-test data (data.test = none)"


def load_evaluation_data(
    settings: FederationSettings, config: FreeConfig
) -> tuple[ClassImages | None, ClassImages | None]:
    """The meta-val and meta-test sets named by ``data.val`` / ``data.test``, or None each.

    Both are loaded at the meta-learner's input (``config.meta_learner`` channels and side).

    Raises:
        DatasetError: a missing path, an empty class folder, an unreadable image, ...
    """
    learner = config.meta_learner
    sets = []
    for text, split in ((settings.val_source, "val"), (settings.test_source, "test")):
        source = DataSource.parse(text, key=f"data.{split}")
        data = source.load(
            split,
            image_size=learner.image_size,
            channels=learner.channels,
            assets_dir=settings.assets_dir,
        )
        if data is not None:
            logger.info(
                "meta-%s: %s, %d classes, %d images at %dx%dx%d",
                split,
                source,
                data.num_classes,
                len(data.labels),
                *data.image_shape,
            )
        sets.append(data)
    if settings.val_source == settings.test_source and settings.val_source.startswith("folder:"):
        logger.warning(
            "data.val and data.test name the same folder: the meta-test accuracy is measured "
            "on the classes that selected the meta-learner, so it is optimistic"
        )
    return sets[0], sets[1]


def fit_evaluation(config: FreeConfig, *sets: ClassImages | None) -> FreeConfig:
    """``config`` with as many queries per class as every class of the evaluation sets holds.

    An episode draws ``shots + q_query`` images of each of its classes, and a class with
    fewer is never drawn. Glyph classes hold 20 images, enough for 5 shots and 15 queries.
    Icon classes hold 10 to 13, and a folder may hold fewer. Rather than evaluate on the few
    largest classes only, the query count drops to ``smallest class - largest shot``, with a
    warning; the report states it.

    Raises:
        DatasetError: a set has fewer classes than ``eval.n_way``, or a class holds no more
            images than the largest shot.
    """
    ev = config.eval
    present = [d for d in sets if d is not None]
    for data in present:
        if data.num_classes < ev.n_way:
            raise DatasetError(
                f"{data.name}: {data.num_classes} classes; {ev.n_way}-way tasks need {ev.n_way}"
            )
    if not present:
        return config
    smallest, name = min(
        (int(np.bincount(d.labels, minlength=d.num_classes).min()), d.name) for d in present
    )
    most = max(ev.shots)
    if smallest <= most:
        raise DatasetError(
            f"{name}: a class holds {smallest} images; {most}-shot tasks need at least "
            f"{most + 1} per class (the shots and one query)"
        )
    queries = min(ev.q_query, smallest - most)
    if queries < ev.q_query:
        logger.warning(
            "evaluation with %d queries per class instead of %d: the smallest class of %s "
            "holds %d images and %d-shot tasks take %d of them",
            queries,
            ev.q_query,
            name,
            smallest,
            most,
            most,
        )
    return dataclasses.replace(config, eval=dataclasses.replace(ev, q_query=queries))


def adapted_inputs(pool: ModelPool, config: FreeConfig) -> list[str]:
    """One line per pooled model whose input FREE converts to the meta-learner's."""
    learner = config.meta_learner
    want = (learner.channels, learner.image_size)
    return [
        f"{e.teacher_id} ({e.owner_id}): {e.spec.in_channels}x{e.spec.image_size}x"
        f"{e.spec.image_size} -> {want[0]}x{want[1]}x{want[1]}"
        for e in pool.entries()
        if (e.spec.in_channels, e.spec.image_size) != want
    ]


def make_finisher(
    run_dir: Path,
    settings: FederationSettings,
    config: FreeConfig,
    val_data: ClassImages | None,
    test_data: ClassImages | None,
    started: float,
) -> Finisher:
    """The end of a run: compare FREE with the baselines, write the report and the export.

    Without meta-test data nothing is evaluated (the report says so) and the export carries
    FREE; without a trained meta-learner (no meta-val data) FREE is not exported (with
    ``export.ship = "best"`` the best baseline is, when there was something to compare).
    """

    def finish(pool: ModelPool, result: Any, outcomes: list[RoundOutcome]) -> dict[str, Any]:
        t0 = time.perf_counter()
        candidates = comparison_candidates(result, pool, settings, config, val_data)
        methods: list[MethodResult] = []
        rows: list[AccuracyRow] = []
        domain_rows: dict[str, list[AccuracyRow]] = {}
        if test_data is None:
            logger.warning(NOTHING_EVALUATED)
        else:
            methods, rows = compare_methods(candidates, settings, config, val_data, test_data)
            domain_rows = compare_domains(methods)
        domain_tasks = config.eval.test_tasks // max(1, len(domain_rows))  # domains take turns
        judged = verdict(methods, settings.export_ship) if methods else None
        if judged is not None:
            margin = judged.free_margin
            (logger.warning if margin is None or margin <= 0 else logger.info)(judged.line)
        artefacts = _export(candidates, judged, settings, run_dir / "export")
        recovered = getattr(result, "recovered_images", None)
        learner = config.meta_learner
        data = ReportData(
            title="FREE-Fed run report",
            rows=rows,
            domain_rows=domain_rows,
            domain_tasks=domain_tasks,
            n_way=config.eval.n_way,
            n_tasks=config.eval.test_tasks,
            curve=[] if result is None else meta_val_curve(result.history),
            pool_kd={} if result is None else dict(getattr(result, "pool_kd", {})),
            pool_kd_curve=[] if result is None else pool_kd_curve(result.history),
            pool=pool.summary(),
            rounds=[json.loads(line) for line in _read_lines(run_dir / "rounds.jsonl")],
            rejections=[dataclasses.asdict(x) for x in pool.rejections()],
            failures=[dataclasses.asdict(x) for x in pool.failures()],
            excluded={} if result is None else dict(result.excluded),
            owners=[]
            if result is None
            else owner_story(
                [dataclasses.asdict(e) for e in pool.entries()],
                getattr(result, "screening", {}),
                result.history,
            ),
            timings={
                "comparison and export": time.perf_counter() - t0,
                "FREE inversion": 0.0 if result is None else float(result.inversion_seconds),
                "total": time.time() - started,
            },
            artefacts=artefacts,
            recovered=None if recovered is None else np.asarray(recovered),
            data={
                "meta-val": settings.val_source,
                "meta-test": settings.test_source,
                "meta-learner input": f"{learner.channels}x{learner.image_size}x"
                f"{learner.image_size}",
                "queries per class": str(config.eval.q_query),
            },
            adapted=adapted_inputs(pool, config),
            nothing_evaluated="" if test_data is not None else NOTHING_EVALUATED,
            verdict=None if judged is None else judged.to_dict(),
        )
        paths = write_report(data, run_dir / "report")
        return {
            "table": format_table(rows, config.eval.n_way) if rows else NOTHING_EVALUATED,
            "verdict": None if judged is None else judged.to_dict(),
            "rows": [dataclasses.asdict(r) for r in rows],
            "domain_rows": {
                d: [dataclasses.asdict(r) for r in rs] for d, rs in domain_rows.items()
            },
            "domain_tasks": domain_tasks if domain_rows else 0,
            "report": {k: str(v) for k, v in paths.items()},
            "export": artefacts,
            "best_iteration": None if result is None else result.best_iteration,
            "best_pool_kd_step": None
            if result is None
            else getattr(result, "best_pool_kd_step", 0),
            "pool_kd": {} if result is None else dict(getattr(result, "pool_kd", {})),
        }

    return finish


def _export(
    candidates: list[Candidate],
    judged: Verdict | None,
    settings: FederationSettings,
    out_dir: Path,
) -> dict[str, str]:
    """Export what ships: the verdict's choice, else FREE; nothing when export is off."""
    if not settings.export:
        return {}
    name = "FREE" if judged is None else judged.shipped
    chosen = next(c for c in candidates if c.name == name)
    if chosen.model is None or chosen.spec is None:
        logger.warning("export skipped: %s has no model (%s)", name, chosen.note)
        return {}
    return export_model(
        chosen.model,
        chosen.spec,
        out_dir,
        signing_key=settings.export_signing_key,
        model_version=settings.export_model_version,
        selection=judged,
    )


def _read_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line] if path.exists() else []
