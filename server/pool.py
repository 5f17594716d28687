"""The durable pool of accepted models: SQLite index + content-addressed safetensors files.

Node ids are unsigned 64-bit in Flower, so the index stores them as text.

Layout under ``root``::

    pool.db                         SQLite (WAL): models, quarantine, rejections, failures, meta
    writer.lock                     held (``flock``) by the one process open for writing
    models/<d0d1>/<digest>.safetensors
    quarantine/<digest>.safetensors damaged files taken out of the pool, kept for inspection

One process writes, any number read (``readonly=True``); the writer holds an exclusive
``flock`` on ``writer.lock`` for as long as it is open, and only the writer ever removes or
moves a file. A model file is written to a temporary name, fsynced, renamed into place with
``os.replace`` and its directory fsynced before its row is committed, so a crash at any
point leaves either no trace or a complete model. The guarantees, what recovery removes and
when, and quarantine are described in ``server/README.md`` ("The model pool"). The pool
implements the ``TeacherSource`` protocol of :mod:`free_common.free.teachers`: ids are
listed from the index and each teacher is loaded from disk only when asked for, so memory
stays bounded as the pool grows.
"""

from __future__ import annotations

import fcntl
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
from typing import BinaryIO, NoReturn

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load, save

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
    "QuarantineRecord",
    "RejectionRecord",
    "headline",
]

logger = logging.getLogger(__name__)

_DB_NAME = "pool.db"
_LOCK_NAME = "writer.lock"
_MODELS_DIR = "models"
_QUARANTINE_DIR = "quarantine"
_TMP_SUFFIX = ".tmp"
_ID_HEX_CHARS = 16  # a teacher id is "t" + this many hex digits of the digest, longer on a clash
# headline() reads at most this much of an error text, and this much of each line: a hostile
# reason of any length costs linear time.
_HEADLINE_SCAN_CHARS = 64 * 1024
_HEADLINE_LINE_CHARS = 1024
_EXC_NAME = re.compile(r"([A-Za-z_][\w.]*): \S")  # linear: ":" cannot match [\w.]
_EXC_WORDS = ("Error", "Exception", "Injected", "Exit")

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
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    teacher_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    relpath TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_unix REAL NOT NULL
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
    """The pool's files or index are damaged, an id is unknown, or the pool is not writable."""


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
class QuarantineRecord:
    """An accepted model taken out of the pool because its file is missing or damaged."""

    teacher_id: str
    digest: str
    owner_id: str
    node_id: int
    round: int
    reason: str


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

    One process at a time opens a pool for writing (the default); it holds an exclusive lock
    until :meth:`close`, and only it recovers, adds, records and quarantines. Any number of
    processes may open the same pool with ``readonly=True`` meanwhile: they read the
    committed index and files and never change either.

    Args:
        root: directory of the pool (created for a writer if needed).
        readonly: open for reading only (no lock, no recovery, every write refused).

    Raises:
        PoolError: another process holds the pool for writing, or (``readonly``) there is
            no readable pool at ``root``.
    """

    def __init__(self, root: Path, *, readonly: bool = False) -> None:
        self.root = Path(root)
        self.readonly = readonly
        self._lock = threading.Lock()
        self._writer_lock: BinaryIO | None = None
        if readonly:
            self._db = _open_reader(self.root / _DB_NAME)
            return
        (self.root / _MODELS_DIR).mkdir(parents=True, exist_ok=True)
        self._writer_lock = _take_writer_lock(self.root / _LOCK_NAME)
        try:
            self._db = sqlite3.connect(
                self.root / _DB_NAME, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._recover()
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Close the index and give up the writer lock (files stay)."""
        if getattr(self, "_db", None) is not None:
            self._db.close()
        if self._writer_lock is not None:
            self._writer_lock.close()  # closing the descriptor releases the flock
            self._writer_lock = None

    def __enter__(self) -> ModelPool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._require_writer()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _require_writer(self) -> None:
        if self.readonly:
            raise PoolError(f"pool {self.root} is open read-only")

    def _recover(self) -> None:
        """Clean up after a writer that died; quarantine rows whose file is gone or cut short.

        Runs only in the writer, under the writer lock: every temporary file then belongs to
        a dead writer, and every file without a row to a write that never committed (its
        ``add`` never returned), so removing them loses nothing that was accepted.
        """
        rows = self._db.execute("SELECT teacher_id, relpath, size_bytes FROM models").fetchall()
        known = {r[1] for r in rows}
        for path in (self.root / _MODELS_DIR).rglob("*"):
            if not path.is_file():
                continue
            rel = path.relative_to(self.root).as_posix()
            if path.name.endswith(_TMP_SUFFIX) or rel not in known:
                logger.warning("pool: removing unindexed file %s (interrupted write)", rel)
                path.unlink()
        for teacher_id, rel, size in rows:
            path = self.root / rel
            if not path.is_file():
                self._quarantine(teacher_id, f"file {rel} is missing")
            elif (actual := path.stat().st_size) != size:
                self._quarantine(teacher_id, f"file {rel} is {actual} bytes, recorded {size}")

    def _quarantine(self, teacher_id: str, reason: str) -> None:
        """Take ``teacher_id`` out of the pool for ``reason``; keep its file for inspection.

        The file moves first and the row second: a crash in between leaves a row without a
        file, which the next open quarantines again.
        """
        row = self._db.execute(
            "SELECT digest, owner_id, node_id, round, relpath FROM models WHERE teacher_id=?",
            (teacher_id,),
        ).fetchone()
        if row is None:
            return
        digest, owner_id, node_id, round_num, rel = row
        source = self.root / rel
        if source.is_file():
            target = self.root / _QUARANTINE_DIR / source.name
            target.parent.mkdir(exist_ok=True)
            os.replace(source, target)
        with self._tx() as db:
            db.execute(
                "INSERT INTO quarantine (teacher_id, digest, owner_id, node_id, round, relpath,"
                " reason, at_unix) VALUES (?,?,?,?,?,?,?,?)",
                (teacher_id, digest, owner_id, node_id, round_num, rel, reason, time.time()),
            )
            db.execute("DELETE FROM models WHERE teacher_id=?", (teacher_id,))
        logger.error("pool: quarantined %s (owner %r): %s", teacher_id, owner_id, reason)

    # ----------------------------------------------------------------- writes
    def add(self, model: ValidatedSubmission, *, node_id: int, round_num: int) -> str:
        """Store an accepted model durably; return its teacher id.

        Idempotent: a digest already present returns the existing id.

        Raises:
            PoolError: the pool is open read-only.
        """
        self._require_writer()
        existing = self._db.execute(
            "SELECT teacher_id FROM models WHERE digest=?", (model.digest,)
        ).fetchone()
        if existing:
            return str(existing[0])
        teacher_id = self._free_teacher_id(model.digest)
        rel = f"{_MODELS_DIR}/{model.digest[:2]}/{model.digest}.safetensors"
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

    def _free_teacher_id(self, digest: str) -> str:
        """A short id for ``digest`` that no model, present or quarantined, has used.

        ``"t"`` + the first 16 hex digits of the digest; when another digest already has
        that prefix (an owner can grind one), more digits, then a counter.
        """
        candidates = [f"t{digest[:n]}" for n in range(_ID_HEX_CHARS, len(digest) + 1, 8)]
        candidates += [f"t{digest}.{i}" for i in range(1, 1000)]
        for teacher_id in candidates:
            taken = self._db.execute(
                "SELECT 1 FROM models WHERE teacher_id=?1"
                " UNION ALL SELECT 1 FROM quarantine WHERE teacher_id=?1",
                (teacher_id,),
            ).fetchone()
            if taken is None:
                return teacher_id
        raise PoolError(f"no free teacher id for digest {digest}")

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
        """True if a model with this canonical digest (hex) is in the pool (not quarantined)."""
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

    def quarantined(self) -> list[QuarantineRecord]:
        """Every model taken out of the pool, oldest first, with the reason."""
        rows = self._db.execute(
            "SELECT teacher_id, digest, owner_id, node_id, round, reason FROM quarantine"
            " ORDER BY id"
        ).fetchall()
        return [QuarantineRecord(r[0], r[1], r[2], int(r[3]), r[4], r[5]) for r in rows]

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
        """The stored state dict of ``teacher_id``, parsed from the very bytes that were checked.

        The file is read once, at most its recorded size plus one byte; those bytes are
        hashed against the recorded SHA-256 and then parsed. A writer quarantines an entry
        whose file is missing, has another size or hash, or does not parse.

        Raises:
            PoolError: unknown id, or the file is missing, damaged or unreadable.
        """
        row = self._db.execute(
            "SELECT relpath, file_sha256, size_bytes FROM models WHERE teacher_id=?",
            (teacher_id,),
        ).fetchone()
        if row is None:
            raise PoolError(f"unknown teacher id {teacher_id!r}")
        rel, sha256, size = row
        try:
            with open(self.root / rel, "rb") as fh:
                data = fh.read(size + 1)
        except FileNotFoundError:
            self._damaged(teacher_id, f"file {rel} is missing")
        except OSError as err:  # not evidence of damage: report, keep the entry
            raise PoolError(f"cannot read {rel}: {err}") from err
        if len(data) != size:
            self._damaged(teacher_id, f"file {rel} is not {size} bytes long (cut or grown)")
        if hashlib.sha256(data).hexdigest() != sha256:
            self._damaged(
                teacher_id, f"{rel} does not match its recorded SHA-256 (corrupted on disk)"
            )
        try:
            return load(data)
        except SafetensorError as err:
            self._damaged(teacher_id, f"{rel} is not a readable safetensors file: {err}")

    def _damaged(self, teacher_id: str, reason: str) -> NoReturn:
        """Quarantine ``teacher_id`` (writer only) and raise :class:`PoolError` with ``reason``."""
        if not self.readonly:
            self._quarantine(teacher_id, reason)
        raise PoolError(f"teacher {teacher_id}: {reason}")

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
            "quarantined": len(self.quarantined()),
        }

    def summary_json(self) -> str:
        """:meth:`summary` as JSON."""
        return json.dumps(self.summary(), sort_keys=True)


def headline(detail: str, limit: int = 300) -> str:
    """The most telling line of an error text: the first ``pkg.SomeError: message`` line.

    Ray wraps a ClientApp's traceback in its own; the innermost exception line comes first.
    Only the first 64 KiB of ``detail`` and the first 1 KiB of each line are read, so a
    hostile reason of any size costs little; without an exception line, the last line read.
    """
    last = ""
    for raw in detail[:_HEADLINE_SCAN_CHARS].splitlines():
        line = raw.strip()[:_HEADLINE_LINE_CHARS]
        if not line:
            continue
        if _is_exception_line(line):
            return line[:limit]
        last = line
    return last[:limit]


def _is_exception_line(line: str) -> bool:
    """True for ``Name: message`` where the last part of the dotted name holds an error word."""
    match = _EXC_NAME.match(line)
    if match is None:
        return False
    head, _, last = match.group(1).rpartition(".")
    region = last if head else last[1:]  # a bare "Error: ..." is not an exception line
    return any(word in region for word in _EXC_WORDS)


def _take_writer_lock(path: Path) -> BinaryIO:
    """Hold an exclusive ``flock`` on ``path`` (the pool's writer lock); write our pid in it.

    ``flock`` belongs to the open file, so a second open in the same process is refused
    too, and the kernel releases it when the holder exits, however it dies.

    Raises:
        PoolError: another open pool holds the lock, or the file system cannot lock.
    """
    fh = open(path, "a+b")  # noqa: SIM115 - kept open: the lock lives as long as the file
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        fh.seek(0)
        holder = fh.read(32).decode(errors="replace").strip() or "?"
        fh.close()
        if isinstance(err, BlockingIOError):
            raise PoolError(
                f"pool {path.parent} is open for writing by another process (pid {holder}); "
                "open it with readonly=True to read it meanwhile"
            ) from None
        raise PoolError(f"cannot lock {path}: {err}") from err
    fh.truncate(0)
    fh.write(f"{os.getpid()}\n".encode())
    fh.flush()
    return fh


def _open_reader(db_path: Path) -> sqlite3.Connection:
    """A read-only connection to an existing pool index.

    Raises:
        PoolError: no index at ``db_path``, or it cannot be read as a pool index.
    """
    if not db_path.is_file():
        raise PoolError(f"no pool index at {db_path}")
    uri = f"{db_path.resolve().as_uri()}?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as err:
        raise PoolError(f"cannot open the pool index {db_path}: {err}") from err
    try:
        db.execute("SELECT 1 FROM models LIMIT 1").fetchall()
    except sqlite3.Error as err:
        db.close()
        raise PoolError(f"cannot read the pool index {db_path}: {err}") from err
    return db


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}{_TMP_SUFFIX}")
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
