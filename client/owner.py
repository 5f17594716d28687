"""A data owner's work, without Flower: load its private images, train, build a submission.

The ClientApp (``client/client_app.py``) only unpacks the instruction, calls
:func:`prepare_owner` and :func:`train_and_submit`, and packs the reply. Nothing here ever
returns images: a :class:`~free_common.submission.Submission` holds weights and a card.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.local_training import LocalTrainingResult, train_local_classifier
from client.partitions import PartitionError, assign_owner, owner_id_for, width_for
from free_common import __version__, signing
from free_common.card import OwnerMetrics, encode_card, make_card
from free_common.data.base import ClassImages
from free_common.data.sources import DataSource
from free_common.models.spec import ModelSpec
from free_common.run_config import DEFAULTS, RunConfig, RunConfigError
from free_common.submission import (
    Submission,
    demo_private_key,
    sign_submission,
    tensors_from_state_dict,
)

__all__ = [
    "FaultInjected",
    "OwnerError",
    "OwnerPlan",
    "TrainSettings",
    "build_submission",
    "inject_fault",
    "prepare_owner",
    "train_and_submit",
]

logger = logging.getLogger(__name__)

Config = Mapping[str, object]


class OwnerError(ValueError):
    """The node or run config does not describe a usable owner."""


class FaultInjected(RuntimeError):
    """Raised on purpose by the ``fault.partitions`` test hook."""


@dataclass(frozen=True)
class TrainSettings:
    """Local training settings shared by every owner of a run (``local.*`` run config).

    Defaults are those of :data:`free_common.run_config.KEYS`.
    """

    epochs: int = DEFAULTS.get_int("local.epochs")
    lr: float = DEFAULTS.get_float("local.lr")
    batch_size: int = DEFAULTS.get_int("local.batch-size")
    holdout: float = DEFAULTS.get_float("local.holdout")
    seed: int = DEFAULTS.get_int("seed")

    @classmethod
    def from_run_config(cls, rc: Config | RunConfig) -> TrainSettings:
        """Read ``local.{epochs,lr,batch-size,holdout}`` and ``seed``.

        Raises:
            OwnerError: a value of the wrong type.
        """
        c = _run_config(rc)
        return cls(
            epochs=c.get_int("local.epochs"),
            lr=c.get_float("local.lr"),
            batch_size=c.get_int("local.batch-size"),
            holdout=c.get_float("local.holdout"),
            seed=c.get_int("seed"),
        )


@dataclass(frozen=True)
class OwnerPlan:
    """One owner's private data and what to train on it."""

    owner_id: str
    data: ClassImages
    spec: ModelSpec
    private_key: Ed25519PrivateKey | None
    label_names: tuple[str, ...] = ()
    label_kind: str = "private"
    seed_offset: int = 0


def _run_config(rc: Config | RunConfig) -> RunConfig:
    """The checked run config (defaults filled in); OwnerError on a bad value."""
    try:
        return rc if isinstance(rc, RunConfig) else RunConfig(rc)
    except RunConfigError as err:
        raise OwnerError(str(err)) from err


def _int(node_config: Config, key: str, default: int) -> int:
    value = node_config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise OwnerError(f"node config {key} must be an integer, got {value!r}")
    return value


def _str(node_config: Config, key: str, default: str = "") -> str:
    value = node_config.get(key, default)
    if not isinstance(value, str):
        raise OwnerError(f"node config {key} must be a string, got {value!r}")
    return value


def prepare_owner(node_config: Config, run_config: Config | RunConfig) -> OwnerPlan:
    """Decide which private data this node holds and which model it trains.

    Simulation (``partition-id`` in the node config): the owner's classes of the
    ``data.train`` source, assigned by :func:`client.partitions.assign_owner` and loaded at
    the meta-learner's input; when ``data.train`` mixes domains (``glyphs+icons``), owners
    are dealt to the domains in turn, each partitioned on its own and loaded at the learner's
    side but its domain's own channels; the signing key is node config ``signing-key`` if set, else
    derived from ``fed.demo-key-secret`` (simulation only) when that is set.

    Deployment: node config ``data-path`` (an ImageFolder, or a dataset root with
    ``dataset=<name>`` and ``split``), ``owner-id``, ``arch`` (default conv4), optional
    ``image-size`` and ``channels``, and ``signing-key`` (path to the owner's Ed25519 PEM
    key; unsigned without it).

    Raises:
        OwnerError: a bad node or run config value.
        DatasetError: the owner's data cannot be read.
    """
    rc = _run_config(run_config)
    width, resnet_width = rc.get_int("model.width"), rc.get_int("model.resnet-width")
    if "partition-id" in node_config:
        return _simulated_owner(node_config, rc)
    return _deployment_owner(node_config, width, resnet_width)


def _simulated_owner(node_config: Config, rc: RunConfig) -> OwnerPlan:
    """A simulated owner: its share of the ``data.train`` classes."""
    pid = _int(node_config, "partition-id", 0)
    num = _int(node_config, "num-partitions", 1)
    try:
        source = rc.source("data.train")
        learner = rc.free_config().meta_learner
    except RunConfigError as err:
        raise OwnerError(str(err)) from err
    if source.is_none:
        raise OwnerError("data.train = none: simulated owners need a data source to partition")
    if not 0 <= pid < num:
        raise OwnerError(f"partition-id {pid} outside 0..{num - 1}")
    part, local_pid, local_num = _domain_of(source, pid, num)
    # `flwr run` ships the app without the .npz assets: runs pass their folder.
    train = part.load(
        "train",
        image_size=learner.image_size,
        channels=learner.channels if part is source else part.native_channels() or 1,
        assets_dir=rc.get_str("data.assets-dir"),
    )
    assert train is not None
    try:
        plan = assign_owner(
            local_pid,
            local_num,
            num_classes=train.num_classes,
            seed=rc.get_int("seed"),
            arch_mix=rc.get_str("fed.arch-mix"),
            classes_per_owner=rc.get_int("fed.classes-per-owner"),
            overlap=rc.get_int("fed.class-overlap"),
            width=rc.get_int("model.width"),
            resnet_width=rc.get_int("model.resnet-width"),
            in_channels=train.image_shape[0],
            image_size=train.image_shape[1],
        )
    except PartitionError as err:
        raise OwnerError(f"{part}: {err}") from err
    plan = replace(plan, owner_id=owner_id_for(pid))
    data = train.subset(plan.classes)
    key = _node_key(node_config)
    secret = rc.get_str("fed.demo-key-secret")
    if key is None and secret:
        key = demo_private_key(secret, plan.owner_id)
    logger.info(
        "%s: simulated owner, %s, %d images of %d classes of %s",
        plan.owner_id,
        plan.spec.arch,
        len(data.labels),
        data.num_classes,
        part,
    )
    return OwnerPlan(plan.owner_id, data, plan.spec, key, seed_offset=pid)


def _domain_of(source: DataSource, pid: int, num: int) -> tuple[DataSource, int, int]:
    """(domain, partition id within it, partitions of it) of owner ``pid`` of ``num``.

    One source is one domain. The owners of a ``+``-mix are dealt to its domains in turn:
    owner ``pid`` holds domain ``pid mod n``, where it is partition ``pid // n`` of the
    owners dealt to that domain. Each domain is partitioned on its own (classes,
    architectures), and its owners keep the domain's own channels.
    """
    if not source.parts:
        return source, pid, num
    n = len(source.parts)
    return source.parts[pid % n], pid // n, len(range(pid % n, num, n))


def _node_key(node_config: Config) -> Ed25519PrivateKey | None:
    """The owner's Ed25519 key from node config ``signing-key`` (a PEM path), if set."""
    path = _str(node_config, "signing-key")
    return signing.load_private_key(Path(path).read_bytes()) if path else None


def _deployment_owner(node_config: Config, width: int, resnet_width: int) -> OwnerPlan:
    """A deployed owner: its own images from node config ``data-path``."""
    from free_common.data.registry import DATASETS, load_split

    data_path = _str(node_config, "data-path")
    owner_id = _str(node_config, "owner-id")
    if not data_path or not owner_id:
        raise OwnerError("node config needs data-path and owner-id (or partition-id in simulation)")
    dataset = _str(node_config, "dataset", "image-folder")
    if dataset not in DATASETS:
        raise OwnerError(f"unknown dataset {dataset!r}: known {', '.join(DATASETS)}")
    size = _int(node_config, "image-size", 0) or None
    channels = _int(node_config, "channels", 0) or None
    data = load_split(
        dataset,
        _str(node_config, "split", "train"),
        root=Path(data_path),
        image_size=size,
        channels=channels,
    )
    c, h, _ = data.image_shape
    mean, std = DATASETS[dataset].stats(c)
    arch = _str(node_config, "arch", "conv4")
    spec = ModelSpec(
        arch=arch,
        in_channels=c,
        image_size=h,
        num_classes=data.num_classes,
        width=width_for(arch, conv_width=width, resnet_width=resnet_width),
        mean=mean,
        std=std,
    )
    share = _str(node_config, "share-labels", "false") == "true"
    return OwnerPlan(
        owner_id,
        data,
        spec,
        _node_key(node_config),
        label_names=data.class_names if share else (),
        label_kind="shared" if share else "private",
    )


def build_submission(
    result: LocalTrainingResult,
    *,
    owner_id: str,
    private_key: Ed25519PrivateKey | None,
    label_names: tuple[str, ...] = (),
    label_kind: str = "private",
    num_holdout_examples: int = 0,
) -> Submission:
    """Card + weights + signature for a trained classifier."""
    tensors = tensors_from_state_dict(result.state_dict)
    kid = signing.key_id(private_key.public_key()) if private_key is not None else ""
    card = make_card(
        result.spec,
        OwnerMetrics(
            holdout_accuracy=float(result.holdout_accuracy),
            train_accuracy=float(result.train_accuracy),
            num_train_examples=int(result.num_examples),
            num_holdout_examples=num_holdout_examples,
            best_epoch=int(result.best_epoch),
        ),
        owner_id=owner_id,
        key_id=kid,
        num_parameters=sum(int(a.size) for a in tensors.values()),
        num_tensors=len(tensors),
        software_version=__version__,
        label_names=label_names,
        label_kind=label_kind,
    )
    card_bytes = encode_card(card)
    signature = sign_submission(private_key, card_bytes, tensors) if private_key else b""
    return Submission(card=card_bytes, tensors=tensors, signature=signature)


def train_and_submit(plan: OwnerPlan, settings: TrainSettings, round_num: int = 1) -> Submission:
    """Train the owner's classifier on its private data and package the submission.

    The training seed depends on the run seed, the owner and the round, so a later round
    contributes a new model (a repeat of an accepted one would be refused as a replay).
    """
    start = time.perf_counter()
    result = train_local_classifier(
        plan.data,
        plan.spec,
        epochs=settings.epochs,
        lr=settings.lr,
        batch_size=settings.batch_size,
        holdout=settings.holdout,
        seed=settings.seed * 100_003 + plan.seed_offset + 7_919 * (round_num - 1),
    )
    logger.info(
        "%s: trained %s in %.1f s, hold-out accuracy %.3f (epoch %d)",
        plan.owner_id,
        plan.spec.arch,
        time.perf_counter() - start,
        result.holdout_accuracy,
        result.best_epoch,
    )
    return build_submission(
        result,
        owner_id=plan.owner_id,
        private_key=plan.private_key,
        label_names=plan.label_names,
        label_kind=plan.label_kind,
        num_holdout_examples=len(plan.data.labels) - int(result.num_examples),
    )


def inject_fault(partition_id: int | None, spec: str) -> None:
    """Test hook: fail on purpose as ``fault.partitions`` says (``"1=raise,2=sleep:30"``).

    Raises:
        FaultInjected: when this partition is marked ``raise``.
    """
    if partition_id is None or not spec:
        return
    for item in filter(None, (s.strip() for s in spec.split(","))):
        target, _, action = item.partition("=")
        if target.strip() != str(partition_id):
            continue
        kind, _, arg = action.partition(":")
        if kind == "raise":
            raise FaultInjected(f"partition {partition_id}: injected failure")
        if kind == "sleep":
            logger.warning("partition %d: injected sleep %s s", partition_id, arg)
            time.sleep(float(arg or 3600))
        if kind == "exit":
            os._exit(int(arg or 1))
