from dataclasses import dataclass

import torch

from free_common.config import MemoryConfig, ReplayConfig
from free_common.free.memory_bank import MemoryBank
from free_common.free.replay import replay_phase, sample_bank_episode

CFG = ReplayConfig(n_way=3, k_shot=1, q_query=2, meta_batch=2, patience=3, max_meta_batches=0)


def _bank(classes: int, per_class: int = 3) -> MemoryBank:
    bank = MemoryBank(MemoryConfig(max_per_class=10, max_images=1000))
    for t in range(classes // 2 + 1):
        images = torch.rand(2 * per_class, 1, 8, 8)
        bank.add(images, torch.arange(2).repeat_interleave(per_class), (f"t{t}/0", f"t{t}/1"))
    return bank


def test_episode_shapes_and_labels() -> None:
    ep = sample_bank_episode(_bank(6), CFG, torch.Generator(), image_size=16, channels=1)
    assert ep is not None
    assert ep.support_images.shape == (3, 1, 16, 16) and ep.query_images.shape == (6, 1, 16, 16)
    assert ep.support_labels.tolist() == [0, 1, 2] and ep.query_labels.tolist() == [
        0,
        0,
        1,
        1,
        2,
        2,
    ]


def test_tasks_mix_classes_of_different_teachers() -> None:
    bank, rng = _bank(8), torch.Generator().manual_seed(0)
    teachers_per_task = set()
    for _ in range(20):
        ep = sample_bank_episode(bank, CFG, rng, image_size=8, channels=1)
        assert ep is not None
        teachers_per_task.add(len({bank.keys[c].split("/")[0] for c in ep.classes}))
    assert max(teachers_per_task) > 1


def test_too_few_classes_gives_none() -> None:
    bank = _bank(0)  # two classes only
    assert sample_bank_episode(bank, CFG, torch.Generator(), image_size=8, channels=1) is None


@dataclass
class _Result:
    loss: float
    accuracy: float


class _FakeMaml:
    def __init__(self, accuracies: list[float]) -> None:
        self.accuracies, self.calls = accuracies, 0

    def step(self, tasks: list[object]) -> _Result:
        acc = self.accuracies[min(self.calls, len(self.accuracies) - 1)]
        self.calls += 1
        return _Result(1.0, acc)


def test_patience_stops_after_consecutive_non_improving_batches() -> None:
    fake = _FakeMaml([0.2, 0.5, 0.4, 0.5, 0.3, 0.9])  # best 0.5 at call 2, then 3 stale
    stats = replay_phase(fake, _bank(6), CFG, torch.Generator(), image_size=8, channels=1)  # type: ignore[arg-type]
    assert stats.meta_batches == 5 and stats.best_accuracy == 0.5


def test_max_meta_batches_caps_the_phase() -> None:
    fake = _FakeMaml([i / 100 for i in range(100)])  # always improving
    cfg = ReplayConfig(n_way=3, k_shot=1, q_query=2, meta_batch=1, patience=3, max_meta_batches=7)
    stats = replay_phase(fake, _bank(6), cfg, torch.Generator(), image_size=8, channels=1)  # type: ignore[arg-type]
    assert stats.meta_batches == 7


def test_real_maml_replay_runs(teachers: list[object]) -> None:
    from free_common.config import FreeConfig
    from free_common.free.meta_learner import build_meta_learner
    from free_common.maml import MamlTrainer

    learner = build_meta_learner(FreeConfig.preset("test").meta_learner)
    maml = MamlTrainer(learner, inner_steps=1, inner_lr=0.01)
    before = [p.clone() for p in learner.parameters()]
    cfg = ReplayConfig(n_way=3, k_shot=1, q_query=2, meta_batch=2, patience=2, max_meta_batches=2)
    stats = replay_phase(maml, _bank(6), cfg, torch.Generator(), image_size=16, channels=1)
    assert stats.meta_batches == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.parameters(), strict=True))
