"""Flower ClientApp of a data owner (thin): train on private data, reply with weights only.

The reply carries an ArrayRecord ``"weights"`` (the state dict), a ConfigRecord
``"submission"`` with the serialised model card (``card``) and the Ed25519 signature
(``signature``), and a MetricRecord ``"metrics"``. No image ever leaves the node. All the
work happens in :mod:`client.owner`.
"""

from __future__ import annotations

import logging

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.owner import TrainSettings, inject_fault, prepare_owner, train_and_submit
from free_common.card import decode_card
from free_common.run_config import RunConfig

logger = logging.getLogger(__name__)

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train this owner's classifier and reply with weights, card and signature."""
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("client").setLevel(logging.INFO)
    run_config = RunConfig(context.run_config)
    node_config = dict(context.node_config)
    pid = node_config.get("partition-id")
    inject_fault(pid if isinstance(pid, int) else None, run_config.get_str("fault.partitions"))
    plan = prepare_owner(node_config, run_config)
    config = msg.content.config_records.get("config")
    round_num = config.get("round", 1) if config is not None else 1
    submission = train_and_submit(
        plan,
        TrainSettings.from_run_config(run_config),
        round_num if isinstance(round_num, int) else 1,
    )
    card = decode_card(submission.card)
    content = RecordDict(
        {
            "weights": ArrayRecord(array_dict={k: Array(v) for k, v in submission.tensors.items()}),
            "submission": ConfigRecord(
                {"card": submission.card, "signature": submission.signature}
            ),
            "metrics": MetricRecord(
                {
                    "num-examples": int(card.metrics.num_train_examples),
                    "holdout-accuracy": float(card.metrics.holdout_accuracy),
                }
            ),
        }
    )
    logger.info("%s: replying with %d tensors (no data)", plan.owner_id, len(submission.tensors))
    return Message(content, reply_to=msg)
