"""Flower ServerApp (thin): collect every owner's model, validate, pool, run FREE, report.

Built-in strategies cannot hold models of different architectures, so ``main`` drives its
own loop over the Grid. Replies are attributed to nodes through our own ``message_id ->
node`` table (the SuperLink answers for a lost node from its own id). All the logic lives
in :mod:`server.federation`, :mod:`server.round`, :mod:`server.validation` and
:mod:`server.pool`.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from free_common.run_config import RunConfig
from free_common.submission import Submission
from server.federation import (
    NOTHING_EVALUATED,
    FederationSettings,
    fit_evaluation,
    key_registry_for,
    load_evaluation_data,
    make_finisher,
    run_federation,
)
from server.npy import NpyError, decode_npy
from server.round import Reply
from server.validation import Limits

logger = logging.getLogger("server.server_app")

app = ServerApp()


class NodeWaitTimeout(RuntimeError):
    """Fewer nodes than ``fed.min-nodes`` connected within ``fed.node-wait-s``."""


def wait_for_nodes(grid: Grid, minimum: int, timeout_s: float) -> list[int]:
    """Node ids once at least ``minimum`` are connected (raises after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= minimum:
            return nodes
        if time.monotonic() > deadline:
            raise NodeWaitTimeout(
                f"only {len(nodes)} of {minimum} nodes connected after {timeout_s:.0f} s "
                "(fed.min-nodes / fed.node-wait-s)"
            )
        logger.info("waiting for nodes: %d/%d connected", len(nodes), minimum)
        time.sleep(2.0)


def unpack_submission(
    content: RecordDict, max_bytes: int, max_arrays: int = Limits.max_tensors
) -> Submission | str:
    """The submission in a reply's records, or why it cannot be read (hostile or malformed).

    Cheap checks come first, before any array is parsed: the number of arrays, then their
    total size, then each array's ``.npy`` header against its declared dtype and shape
    (:func:`server.npy.decode_npy`; numpy's own loader would also open zip archives).
    """
    try:
        weights = content.array_records["weights"]
        if len(weights) > max_arrays:
            return f"{len(weights)} arrays, limit {max_arrays}"
        size = weights.count_bytes()
        if size > max_bytes:
            return f"weights are {size} bytes, limit {max_bytes}"
        record = content.config_records["submission"]
        card, signature = record["card"], record.get("signature", b"")
        if not isinstance(card, bytes) or not isinstance(signature, bytes):
            return "card and signature must be bytes"
        tensors: dict[str, np.ndarray] = {}
        for name, array in weights.items():
            if array.stype != "numpy.ndarray":
                return f"array {name[:100]!r} is serialised as {array.stype[:100]!r}, not numpy"
            tensors[name] = decode_npy(array.data, dtype=array.dtype, shape=array.shape)
        return Submission(card, tensors, signature)
    except NpyError as err:
        return f"cannot unpack reply: {err}"[:500]
    except Exception as err:  # noqa: BLE001 - hostile records must not stop the server
        return f"cannot unpack reply: {err!r}"[:500]


def to_reply(msg: Message, max_bytes: int) -> Reply:
    """Reduce a Flower reply to a :class:`Reply` (errors kept with their code)."""
    reply_to = msg.metadata.reply_to_message_id
    if msg.has_error():
        return Reply(reply_to, error=(int(msg.error.code), str(msg.error.reason)))
    unpacked = unpack_submission(msg.content, max_bytes)
    if isinstance(unpacked, str):
        return Reply(reply_to, unpack_error=unpacked)
    return Reply(reply_to, submission=unpacked)


def _configure_logging() -> None:
    """Our loggers at INFO, everyone else's (httpx polling, Ray) at WARNING."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    for name in ("server", "client", "free_common"):
        logging.getLogger(name).setLevel(logging.INFO)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Rounds of collection, FREE over the pool, evaluation, report and export."""
    _configure_logging()
    started = time.time()
    rc = RunConfig(context.run_config)
    threads = rc.get_int("server.threads")
    if threads > 0:
        # 0 (default) keeps torch's choice, one thread per core: FREE and the meta-test run
        # after the owners have replied, so they have the host to themselves. On 2 cores
        # this made the main job 1.7x faster than 1 thread (server/README.md, "Measured").
        # Set 1 when the server shares its host with busy clients.
        torch.set_num_threads(threads)
    settings = FederationSettings.from_run_config(rc)
    free_config = rc.free_config()
    run_dir = Path(settings.out_dir or Path.cwd() / "runs" / f"run-{context.run_id}").resolve()
    logger.info("FREE-Fed server: run directory %s", run_dir)
    # `flwr run` ships the app without the .npz assets: runs pass their folder (data.assets-dir).
    val_data, test_data = load_evaluation_data(settings, free_config)
    free_config = fit_evaluation(free_config, val_data, test_data)
    max_bytes = int(settings.max_model_mb * 1024 * 1024)

    def collect(round_num: int) -> tuple[dict[str, int], list[Reply]]:
        nodes = wait_for_nodes(grid, settings.min_nodes, settings.node_wait_s)
        logger.info("round %d: sending training instructions to %d nodes", round_num, len(nodes))
        messages = [
            Message(
                RecordDict({"config": ConfigRecord({"round": round_num})}),
                dst_node_id=node,
                message_type=MessageType.TRAIN,
                group_id=f"round-{round_num}",
                ttl=settings.round_timeout_s,
            )
            for node in nodes
        ]
        replies = list(grid.send_and_receive(messages, timeout=settings.round_timeout_s))
        sent = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
        return sent, [to_reply(r, max_bytes) for r in replies]

    summary = run_federation(
        settings,
        free_config,
        collect,
        run_dir=run_dir,
        val_data=val_data,
        keys=key_registry_for(settings),
        finish=make_finisher(run_dir, settings, free_config, val_data, test_data, started),
    )
    judged = summary.get("verdict") or {}
    lines = [
        "",
        "FREE-Fed results (meta-test):",
        str(summary.get("table", NOTHING_EVALUATED)),
        "",
        *([str(judged["line"]), ""] if judged else []),
        *(f"{k}: {v}" for k, v in dict(summary.get("report", {})).items()),
        *(f"export {k}: {v}" for k, v in dict(summary.get("export", {})).items()),
        f"summary: {run_dir / 'summary.json'}",
    ]
    (run_dir / "RESULT.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stdout, flush=True)
