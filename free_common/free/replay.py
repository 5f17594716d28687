"""Cross-task replay (FREE paper Sec. 4.3): MAML on tasks drawn from the memory bank.

An N-way task takes N class keys at random among all stored classes, so one task can
mix classes recovered from different teachers (the "cross-task" part). The replay phase
runs meta-batches of such tasks through :class:`free_common.maml.MamlTrainer` (second
order by default) until ``patience`` consecutive meta-batches fail to raise the best
mean query accuracy of the phase (published: 10), or ``max_meta_batches`` (a cap the
CPU preset needs; 0 = none, as published).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from free_common.config import ReplayConfig
from free_common.data.episodes import Episode
from free_common.free.augment import to_model_input
from free_common.free.errors import check_finite
from free_common.free.memory_bank import MemoryBank
from free_common.maml import MamlTrainer

__all__ = ["ReplayStats", "replay_phase", "sample_bank_episode"]


@dataclass(frozen=True)
class ReplayStats:
    """Summary of one replay phase.

    Attributes:
        meta_batches: meta-updates taken (0 when the bank cannot form a task yet).
        best_accuracy: best mean query accuracy over the phase's meta-batches.
        last_loss: query loss of the last meta-batch.
    """

    meta_batches: int
    best_accuracy: float
    last_loss: float


def sample_bank_episode(
    bank: MemoryBank,
    config: ReplayConfig,
    rng: torch.Generator,
    *,
    image_size: int,
    channels: int,
) -> Episode | None:
    """One N-way K-shot Q-query task from the bank, or None if too few classes qualify.

    Images are resized/converted to the learner's input (image_size, channels).
    """
    need = config.k_shot + config.q_query
    eligible = [k for k in bank.keys if bank.count(k) >= need]
    if len(eligible) < config.n_way:
        return None
    picks = torch.randperm(len(eligible), generator=rng)[: config.n_way].tolist()
    support, query = [], []
    for key in (eligible[i] for i in picks):
        rows = torch.randperm(bank.count(key), generator=rng)[:need]
        images = to_model_input(bank.images(key, rows), image_size, channels)
        support.append(images[: config.k_shot])
        query.append(images[config.k_shot :])
    labels = torch.arange(config.n_way)
    return Episode(
        support_images=torch.cat(support),
        support_labels=labels.repeat_interleave(config.k_shot),
        query_images=torch.cat(query),
        query_labels=labels.repeat_interleave(config.q_query),
        classes=tuple(picks),
    )


def replay_phase(
    maml: MamlTrainer,
    bank: MemoryBank,
    config: ReplayConfig,
    rng: torch.Generator,
    *,
    image_size: int,
    channels: int,
) -> ReplayStats:
    """MAML meta-batches from the bank under the patience rule.

    Raises:
        NonFiniteLossError: the replay loss became NaN/Inf (term ``replay/maml``).
    """
    best, stale, done, last = float("-inf"), 0, 0, float("nan")
    while config.max_meta_batches == 0 or done < config.max_meta_batches:
        tasks = [
            sample_bank_episode(bank, config, rng, image_size=image_size, channels=channels)
            for _ in range(config.meta_batch)
        ]
        ready = [t for t in tasks if t is not None]
        if not ready:
            break
        result = maml.step(ready)
        last = check_finite(result.loss, "replay/maml")
        done += 1
        if result.accuracy > best:
            best, stale = result.accuracy, 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    return ReplayStats(done, best if done else 0.0, last)
