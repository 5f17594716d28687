"""A real-data ceiling for the data-free benches: supervised pre-training on meta-train images.

FREE never sees an image; this reference does. It trains the meta-learner's architecture
as one classifier over every meta-train class of the pool's domains (the "pre-train, then
fine-tune" recipe that Tian et al., "Rethinking Few-Shot Image Classification", ECCV 2020,
found as strong as meta-learning on real data), keeps the epoch with the best accuracy on
a held-out tenth of each class's images, and is meta-tested like every other method: its
head is replaced at test time (zero or prototype head start), and BatchNorm uses batch
statistics, as for the Average baseline. It is cheaper than the MAML ceiling of
``scripts.bench.accuracy`` (one pass of supervised epochs instead of second-order
meta-updates) and, unlike it, runs at any input (an RGB learner over glyphs + icons).

Nothing here is chosen on meta-val or meta-test: the epoch comes from the hold-out of the
meta-train classes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from client.local_training import train_local_classifier
from free_common.data.base import ClassImages
from free_common.models import Classifier, ModelSpec, build_model


@dataclass(frozen=True)
class CeilingSettings:
    """How the ceiling is trained (Adam, random shifts of up to 2 pixels).

    Attributes:
        epochs: passes over the meta-train images.
        lr: Adam learning rate.
        batch_size: images per step.
        holdout: fraction of each class held out to choose the epoch.
    """

    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 128
    holdout: float = 0.1


def pretrain_ceiling(
    train: ClassImages,
    spec: ModelSpec,
    seed: int,
    settings: CeilingSettings = CeilingSettings(),
    *,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> tuple[Classifier, dict[str, float | int]]:
    """Train ``spec``'s backbone on all of ``train``'s classes; return it as a meta-learner.

    Args:
        train: meta-train images (N, C, H, W) at ``spec``'s input, labels 0..K-1.
        spec: the meta-learner's spec; its class count is replaced by ``train``'s K.
        seed: seeds the hold-out draw, the initial weights and the shuffling.
        settings: epochs, rate, batch and hold-out.
        device: where to train (default: CUDA when present).
        progress: show a bar over epochs.

    Returns:
        ``(model, info)``: a batch-statistics model with a K-way head (eval mode, CPU),
        and the kept epoch, its hold-out accuracy and the class count.

    Raises:
        ValueError: ``train``'s input differs from ``spec``'s.
    """
    if train.image_shape != (spec.in_channels, spec.image_size, spec.image_size):
        raise ValueError(
            f"meta-train images are {train.image_shape}, the learner takes "
            f"({spec.in_channels}, {spec.image_size}, {spec.image_size})"
        )
    full = replace(spec, num_classes=train.num_classes)
    result = train_local_classifier(
        train,
        full,
        epochs=settings.epochs,
        lr=settings.lr,
        batch_size=settings.batch_size,
        holdout=settings.holdout,
        seed=seed,
        augment=True,
        device=device,
        progress=progress,
    )
    model = build_model(full, batch_stats=True)
    wanted = model.state_dict()
    model.load_state_dict({k: result.state_dict[k] for k in wanted})
    info: dict[str, float | int] = {
        "best_epoch": result.best_epoch,
        "holdout_accuracy": round(result.holdout_accuracy, 4),
        "classes": train.num_classes,
    }
    return model.eval(), info
