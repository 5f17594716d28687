"""What a data owner runs: train a small classifier on its own classes, keep the best epoch.

Mirrors how FREE's pool of pre-trained models is made (the public code's ``tools.py``
pre-training): Adam lr 0.01, batch 128, 60 epochs, gradient-norm clip 50, no augmentation, and the
epoch with the best accuracy on a held-out 20% of each class is kept. The hold-out here
is a seeded stratified random draw (the paper takes the last 20% of each class).

No FREE or Flower code is imported: the Flower ClientApp wraps this function.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from free_common.data.base import ClassImages
from free_common.models import ModelSpec, build_model
from free_common.runtime import pick_device

__all__ = [
    "LocalTrainingError",
    "LocalTrainingResult",
    "stratified_split",
    "train_local_classifier",
]

logger = logging.getLogger(__name__)

GRAD_CLIP_NORM = 50.0
EVAL_BATCH = 512


class LocalTrainingError(ValueError):
    """The owner's data cannot train the requested classifier (too few classes or images)."""


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of training.

    Attributes:
        epoch: 1-based epoch number.
        loss: mean training cross-entropy over the epoch's batches.
        train_accuracy: running accuracy on the training batches, in [0, 1].
        holdout_accuracy: accuracy on the hold-out after the epoch (eval mode), in [0, 1].
    """

    epoch: int
    loss: float
    train_accuracy: float
    holdout_accuracy: float


@dataclass(frozen=True)
class LocalTrainingResult:
    """The kept classifier and how it was obtained.

    Attributes:
        state_dict: weights of the best epoch (CPU tensors, BN running statistics included).
        spec: the spec the weights belong to.
        holdout_accuracy: hold-out accuracy of the kept weights, in [0, 1].
        train_accuracy: accuracy of the kept weights on the training part (eval mode).
        best_epoch: 1-based epoch of the kept weights.
        epochs: epochs run.
        num_examples: training images used (hold-out excluded).
        history: one record per epoch.
    """

    state_dict: dict[str, Tensor]
    spec: ModelSpec
    holdout_accuracy: float
    train_accuracy: float
    best_epoch: int
    epochs: int
    num_examples: int
    history: list[EpochRecord] = field(default_factory=list)


def stratified_split(
    labels: npt.NDArray[np.int64], num_classes: int, holdout: float, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Row indices ``(train, holdout)``: ``round(holdout * n_c)`` (at least 1) rows per class.

    Raises:
        LocalTrainingError: ``holdout`` outside (0, 1), or a class with fewer than 2 images
            (it could not be in both parts).
    """
    if not 0.0 < holdout < 1.0:
        raise LocalTrainingError(f"holdout must be in (0, 1), got {holdout}")
    rng = np.random.default_rng(seed)
    train_rows: list[npt.NDArray[np.int64]] = []
    held_rows: list[npt.NDArray[np.int64]] = []
    for c in range(num_classes):
        rows = np.flatnonzero(labels == c).astype(np.int64)
        if rows.size < 2:
            raise LocalTrainingError(
                f"class {c} has {rows.size} image(s): a hold-out split needs at least 2 per class"
            )
        rows = rng.permutation(rows)
        n_held = min(max(1, round(holdout * rows.size)), rows.size - 1)
        held_rows.append(rows[:n_held])
        train_rows.append(rows[n_held:])
    return np.sort(np.concatenate(train_rows)), np.sort(np.concatenate(held_rows))


def _check_inputs(data: ClassImages, spec: ModelSpec) -> None:
    if data.num_classes < 2:
        raise LocalTrainingError(
            f"{data.name}: a classifier needs >= 2 classes, got {data.num_classes}"
        )
    if spec.num_classes != data.num_classes:
        raise LocalTrainingError(
            f"spec.num_classes={spec.num_classes} but {data.name} has {data.num_classes} classes"
        )
    expected = (spec.in_channels, spec.image_size, spec.image_size)
    if data.image_shape != expected:
        raise LocalTrainingError(f"{data.name}: images {data.image_shape}, spec expects {expected}")


def _shift_augment(images: Tensor, generator: torch.Generator, max_shift: int = 2) -> Tensor:
    """Random translation by up to ``max_shift`` pixels (zero padding), per image. (B, C, H, W)."""
    b, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=generator).tolist()
    return torch.stack([padded[i, :, y : y + h, x : x + w] for i, (y, x) in enumerate(offsets)])


def _accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    """Eval-mode accuracy; images uint8 (N, C, H, W) on the model's device."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, images.shape[0], EVAL_BATCH):
            batch = images[start : start + EVAL_BATCH].float().div(255.0)
            correct += int((model(batch).argmax(1) == labels[start : start + EVAL_BATCH]).sum())
    return correct / max(1, images.shape[0])


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    labels: Tensor,
    *,
    batch_size: int,
    generator: torch.Generator,
    augment: bool,
) -> tuple[float, float]:
    """One shuffled pass; returns (mean batch loss, running accuracy)."""
    model.train()
    order = torch.randperm(images.shape[0], generator=generator).to(images.device)
    losses, correct = [], 0
    for start in range(0, images.shape[0], batch_size):
        rows = order[start : start + batch_size]
        batch = images[rows].float().div(255.0)
        if augment:
            batch = _shift_augment(batch.cpu(), generator).to(images.device)
        logits = model(batch)
        loss = F.cross_entropy(logits, labels[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)
        optimizer.step()
        losses.append(float(loss.detach()))
        correct += int((logits.argmax(1) == labels[rows]).sum())
    return float(np.mean(losses)), correct / images.shape[0]


def train_local_classifier(
    data: ClassImages,
    spec: ModelSpec,
    *,
    epochs: int = 60,
    lr: float = 0.01,
    batch_size: int = 128,
    holdout: float = 0.2,
    seed: int = 0,
    augment: bool = False,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> LocalTrainingResult:
    """Train a ``spec`` classifier on the owner's images and keep the best hold-out epoch.

    Args:
        data: the owner's images; labels 0..num_classes-1 (uint8 (N, C, H, W)).
        spec: architecture; ``spec.num_classes`` must equal ``data.num_classes`` and the
            input shape must match the images.
        epochs: training epochs (60).
        lr: Adam learning rate (0.01).
        batch_size: mini-batch size (128).
        holdout: fraction of each class held out to choose the epoch (0.2).
        seed: seeds the split, the initial weights and the shuffling.
        augment: random shifts of up to 2 pixels (off, as in the paper).
        device: default :func:`free_common.runtime.pick_device`.
        progress: show a tqdm bar over epochs.

    Returns:
        The best epoch's weights (ties: the earliest) with accuracies and per-epoch history.

    Raises:
        LocalTrainingError: fewer than 2 classes, a class with fewer than 2 images, a
            spec that does not match the data, or ``epochs < 1``.
    """
    _check_inputs(data, spec)
    if epochs < 1 or batch_size < 1:
        raise LocalTrainingError(
            f"need epochs >= 1 and batch_size >= 1, got {epochs}, {batch_size}"
        )
    train_rows, held_rows = stratified_split(data.labels, data.num_classes, holdout, seed)
    target = torch.device(device) if device is not None else pick_device()
    images = torch.from_numpy(data.images).to(target)
    labels = torch.from_numpy(data.labels).to(target)
    x_train, y_train = images[train_rows], labels[train_rows]
    x_held, y_held = images[held_rows], labels[held_rows]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(spec).to(target)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)

    history: list[EpochRecord] = []
    best_accuracy, best_epoch = -1.0, 0
    best_state: dict[str, Tensor] = {}
    for epoch in tqdm(range(1, epochs + 1), desc="local training", disable=not progress):
        loss, running = _train_epoch(
            model,
            optimizer,
            x_train,
            y_train,
            batch_size=batch_size,
            generator=generator,
            augment=augment,
        )
        held_accuracy = _accuracy(model, x_held, y_held)
        history.append(EpochRecord(epoch, loss, running, held_accuracy))
        if held_accuracy > best_accuracy:
            best_accuracy, best_epoch = held_accuracy, epoch
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    model.load_state_dict(best_state)
    train_accuracy = _accuracy(model, x_train, y_train)
    logger.info(
        "%s: best epoch %d/%d, hold-out %.1f%%, train %.1f%% (%d training images)",
        data.name,
        best_epoch,
        epochs,
        100 * best_accuracy,
        100 * train_accuracy,
        len(train_rows),
    )
    return LocalTrainingResult(
        state_dict=best_state,
        spec=spec,
        holdout_accuracy=best_accuracy,
        train_accuracy=train_accuracy,
        best_epoch=best_epoch,
        epochs=epochs,
        num_examples=int(len(train_rows)),
        history=history,
    )
