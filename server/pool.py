"""The durable pool of accepted models: SQLite index + content-addressed safetensors files.

Node ids are unsigned 64-bit in Flower, so the index stores them as text.

Layout under ``root``::

    pool.db                         SQLite (WAL): models, rejections, failures, meta
    models/<d0d1>/<digest>.safetensors

A model file is written to a temporary name, fsynced, renamed into place with
``os.replace`` and its directory fsynced before its row is committed, so a crash at any
point leaves either no trace or a complete model (an orphan file without a row is removed
on the next open). The pool implements the ``TeacherSource`` protocol of
:mod:`free_common.free.teachers`: ids are listed from the index and each teacher is loaded
from disk only when asked for, so memory stays bounded as the pool grows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save

from free_common.card import class_keys, decode_card, spec_from_card
from free_common.free.teachers import Teacher
from free_common.models import build_model
from free_common.models.spec import ModelSpec
from server.validation import ValidatedSubmission

__all__ = [
    "FailureRecord",
    "ModelPool",
    "PoolEntry",
    "PoolError",
    "RejectionRecord",
    "headline",
]

logger = logging.getLogger(__name__)
_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Injected|Exit)\w*: \S")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    teacher_id TEXT NOT NULL UNIQUE,
    digest TEXT NOT NULL UNIQUE,
    file_sha256 TEXT NOT NULL,
    relpath TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    arch TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    card BLOB NOT NULL,
    owner_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    signed_by TEXT NOT NULL,
    accepted_unix REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rejections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    round INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    at_unix REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS failures (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    round INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    at_unix REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class PoolError(RuntimeError):
    """The pool's files or index are damaged, or an id is unknown."""


@dataclass(frozen=True)
class PoolEntry:
    """Index row of one accepted model."""

    teacher_id: str
    digest: str
    arch: str
    spec: ModelSpec
    owner_id: str
    node_id: int
    round: int
    size_bytes: int


@dataclass(frozen=True)
class RejectionRecord:
    """One rejected submission."""

    round: int
    node_id: int
    digest: str
    reason: str
    detail: str


@dataclass(frozen=True)
class FailureRecord:
    """One owner that raised, dropped or timed out."""

    round: int
    node_id: int
    kind: str
    detail: str


class ModelPool:
    """Durable, content-addressed store of accepted teachers (a ``TeacherSource``).

    Args:
        root: directory of the pool (created if needed).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "models").mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.root / "pool.db", isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._recover()

    # ----------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Close the index (files stay)."""
        self._db.close()

    def __enter__(self) -> ModelPool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _recover(self) -> None:
        """Drop temporary and orphan files; fail loudly if an indexed file vanished."""
        known = {r[0] for r in self._db.execute("SELECT relpath FROM models")}
        for path in (self.root / "models").rglob("*"):
            if not path.is_file():
                continue
            rel = path.relative_to(self.root).as_posix()
            if path.name.endswith(".tmp") or rel not in known:
                logger.warning("pool: removing unindexed file %s (interrupted write)", rel)
                path.unlink()
        lost = [rel for rel in known if not (self.root / rel).is_file()]
        if lost:
            raise PoolError(f"pool index lists {len(lost)} missing files, e.g. {lost[0]}")

    # ----------------------------------------------------------------- writes
    def add(self, model: ValidatedSubmission, *, node_id: int, round_num: int) -> str:
        """Store an accepted model durably; return its teacher id.

        Idempotent: a digest already present returns the existing id.
        """
        existing = self._db.execute(
            "SELECT teacher_id FROM models WHERE digest=?", (model.digest,)
        ).fetchone()
        if existing:
            return str(existing[0])
        teacher_id = f"t{model.digest[:16]}"
        rel = f"models/{model.digest[:2]}/{model.digest}.safetensors"
        payload = save(
            {k: np.asarray(v, order="C") for k, v in model.submission.tensors.items()},
            metadata={"digest": model.digest, "teacher_id": teacher_id},
        )
        _atomic_write(self.root / rel, payload)
        with self._tx() as db:
            db.execute(
                "INSERT INTO models (teacher_id, digest, file_sha256, relpath, size_bytes, arch,"
                " spec_json, card, owner_id, node_id, round, signed_by, accepted_unix)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    teacher_id,
                    model.digest,
                    hashlib.sha256(payload).hexdigest(),
                    rel,
                    len(payload),
                    model.spec.arch,
                    model.spec.to_json(),
                    model.submission.card,
                    model.owner_id,
                    str(node_id),
                    round_num,
                    model.signed_by,
                    time.time(),
                ),
            )
        logger.info(
            "pool: accepted %s (%s, owner %r, node %d, %d bytes)",
            teacher_id,
            model.spec.arch,
            model.owner_id,
            node_id,
            len(payload),
        )
        return teacher_id

    def record_rejection(
        self, *, round_num: int, node_id: int, digest: str, reason: str, detail: str
    ) -> None:
        """Record why a submission from ``node_id`` was refused."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO rejections (round, node_id, digest, reason, detail, at_unix)"
                " VALUES (?,?,?,?,?,?)",
                (round_num, str(node_id), digest, reason, detail[:2000], time.time()),
            )
        logger.warning("pool: rejected node %d (%s): %s", node_id, reason, detail[:300])

    def record_failure(self, *, round_num: int, node_id: int, kind: str, detail: str) -> None:
        """Record an owner that raised, dropped or timed out."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO failures (round, node_id, kind, detail, at_unix) VALUES (?,?,?,?,?)",
                (round_num, str(node_id), kind, detail[:2000], time.time()),
            )
        logger.warning("round %d: node %d %s: %s", round_num, node_id, kind, headline(detail))

    def set_meta(self, key: str, value: str) -> None:
        """Persist a small piece of run state (e.g. the last collected round)."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?,?)", (key, value))

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        """Read a value written by :meth:`set_meta`."""
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return str(row[0]) if row else default

    # ----------------------------------------------------------------- reads
    def has_digest(self, digest: str) -> bool:
        """True if a model with this canonical digest (hex) was accepted."""
        row = self._db.execute("SELECT 1 FROM models WHERE digest=?", (digest,)).fetchone()
        return row is not None

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM models").fetchone()[0])

    def ids(self) -> list[str]:
        """Teacher ids in acceptance order (``TeacherSource``)."""
        return [r[0] for r in self._db.execute("SELECT teacher_id FROM models ORDER BY seq")]

    def entries(self) -> list[PoolEntry]:
        """Every index row, in acceptance order."""
        rows = self._db.execute(
            "SELECT teacher_id, digest, arch, spec_json, owner_id, node_id, round, size_bytes"
            " FROM models ORDER BY seq"
        ).fetchall()
        return [
            PoolEntry(r[0], r[1], r[2], ModelSpec.from_json(r[3]), r[4], int(r[5]), r[6], r[7])
            for r in rows
        ]

    def rejections(self) -> list[RejectionRecord]:
        """Every recorded rejection, oldest first."""
        rows = self._db.execute(
            "SELECT round, node_id, digest, reason, detail FROM rejections ORDER BY id"
        ).fetchall()
        return [RejectionRecord(r[0], int(r[1]), r[2], r[3], r[4]) for r in rows]

    def failures(self) -> list[FailureRecord]:
        """Every recorded client failure, oldest first."""
        rows = self._db.execute(
            "SELECT round, node_id, kind, detail FROM failures ORDER BY id"
        ).fetchall()
        return [FailureRecord(r[0], int(r[1]), r[2], r[3]) for r in rows]

    def load_tensors(self, teacher_id: str) -> dict[str, np.ndarray]:
        """The stored state dict of ``teacher_id``, checked against its file hash."""
        row = self._db.execute(
            "SELECT relpath, file_sha256 FROM models WHERE teacher_id=?", (teacher_id,)
        ).fetchone()
        if row is None:
            raise PoolError(f"unknown teacher id {teacher_id!r}")
        path = self.root / row[0]
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != row[1]:
            raise PoolError(f"{path} does not match its recorded SHA-256 (corrupted on disk)")
        return load_file(str(path))

    def load(self, teacher_id: str) -> Teacher:
        """Rebuild teacher ``teacher_id`` in eval mode, gradients off (``TeacherSource``)."""
        row = self._db.execute(
            "SELECT spec_json, card FROM models WHERE teacher_id=?", (teacher_id,)
        ).fetchone()
        if row is None:
            raise PoolError(f"unknown teacher id {teacher_id!r}")
        card = decode_card(bytes(row[1]))
        spec = spec_from_card(card)
        model = build_model(spec)
        state = {k: torch.from_numpy(v) for k, v in self.load_tensors(teacher_id).items()}
        model.load_state_dict(state, strict=True)
        model.eval().requires_grad_(False)
        return Teacher(
            teacher_id=teacher_id, spec=spec, model=model, class_keys=class_keys(card, teacher_id)
        )

    def summary(self) -> dict[str, object]:
        """Counts for logs and reports."""
        by_arch: dict[str, int] = {}
        for arch, n in self._db.execute("SELECT arch, COUNT(*) FROM models GROUP BY arch"):
            by_arch[arch] = n
        by_reason: dict[str, int] = {}
        for reason, n in self._db.execute(
            "SELECT reason, COUNT(*) FROM rejections GROUP BY reason"
        ):
            by_reason[reason] = n
        return {
            "models": len(self),
            "by_arch": by_arch,
            "rejections": by_reason,
            "failures": len(self.failures()),
        }

    def summary_json(self) -> str:
        """:meth:`summary` as JSON."""
        return json.dumps(self.summary(), sort_keys=True)


def headline(detail: str, limit: int = 300) -> str:
    """The most telling line of an error text: the first ``pkg.SomeError: message`` line.

    Ray wraps a ClientApp's traceback in its own; the innermost exception line comes first.
    """
    lines = [line.strip() for line in detail.splitlines() if line.strip()]
    for line in lines:
        if _EXC_LINE.match(line):
            return line[:limit]
    return (lines[-1] if lines else "")[:limit]


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
