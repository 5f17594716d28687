import pytest
import torch

from free_common.config import MemoryConfig
from free_common.free.memory_bank import MemoryBank, MemoryBankError


def _batch(n_classes: int, per_class: int, value: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.full((n_classes * per_class, 1, 4, 4), value)
    return images, torch.arange(n_classes).repeat_interleave(per_class)


def test_ring_buffer_keeps_newest_per_class() -> None:
    bank = MemoryBank(MemoryConfig(max_per_class=3, max_images=100))
    for step in range(4):
        images, targets = _batch(2, 2, value=step / 10)
        bank.add(images, targets, ("a", "b"))
    assert bank.count("a") == 3 and bank.count("b") == 3
    values = bank.images("a", torch.arange(3))[:, 0, 0, 0]
    assert torch.allclose(values, torch.tensor([0.2, 0.3, 0.3]), atol=1 / 255)


def test_global_cap_trims_largest_class_oldest_first() -> None:
    bank = MemoryBank(MemoryConfig(max_per_class=10, max_images=12))
    bank.add(*_batch(1, 10), ("big",))
    bank.add(*_batch(2, 2), ("x", "y"))
    assert len(bank) == 12 and bank.count("big") == 8
    bank.add(*_batch(1, 4), ("z",))
    assert len(bank) == 12 and bank.count("big") == 4


def test_shared_class_keys_merge_across_teachers() -> None:
    bank = MemoryBank(MemoryConfig(max_per_class=10, max_images=100))
    bank.add(*_batch(2, 2), ("cat", "t1/1"))
    bank.add(*_batch(2, 2), ("t2/0", "cat"))
    assert bank.count("cat") == 4 and sorted(bank.keys) == ["cat", "t1/1", "t2/0"]


@pytest.mark.parametrize("dtype", ["uint8", "float16"])
def test_storage_precision_and_round_trip(dtype: str) -> None:
    bank = MemoryBank(MemoryConfig(max_per_class=5, max_images=50, dtype=dtype))
    images = torch.rand(6, 1, 4, 4)
    bank.add(images, torch.tensor([0, 0, 0, 1, 1, 1]), ("a", "b"))
    tol = 0.5 / 255 + 1e-6 if dtype == "uint8" else 1e-3
    assert torch.allclose(bank.images("a", torch.arange(3)), images[:3], atol=tol)
    copy = MemoryBank(MemoryConfig(max_per_class=5, max_images=50, dtype=dtype))
    copy.load_state_dict(bank.state_dict())
    assert copy.keys == bank.keys
    assert torch.equal(copy.images("b", torch.arange(3)), bank.images("b", torch.arange(3)))
    state = bank.state_dict()
    assert all(t.device.type == "cpu" for t in state["images"])


def test_shape_mismatch_is_rejected() -> None:
    bank = MemoryBank(MemoryConfig())
    bank.add(*_batch(1, 2), ("a",))
    with pytest.raises(MemoryBankError, match="holds images"):
        bank.add(torch.rand(2, 1, 8, 8), torch.zeros(2, dtype=torch.long), ("a",))


def test_sample_draws_uniformly_over_stored_images_not_classes() -> None:
    bank = MemoryBank(MemoryConfig(max_per_class=100, max_images=1000))
    bank.add(torch.full((90, 1, 4, 4), 0.2), torch.zeros(90, dtype=torch.long), ("big",))
    bank.add(torch.full((10, 1, 4, 4), 0.8), torch.zeros(10, dtype=torch.long), ("small",))
    drawn = bank.sample(2000, torch.Generator().manual_seed(0))
    assert drawn.shape == (2000, 1, 4, 4)
    share_small = float((drawn[:, 0, 0, 0] > 0.5).float().mean())
    assert 0.07 < share_small < 0.13  # 10 of 100 images, not 1 of 2 classes
    again = bank.sample(2000, torch.Generator().manual_seed(0))
    assert torch.equal(drawn, again)


def test_sampling_an_empty_bank_is_refused() -> None:
    with pytest.raises(MemoryBankError, match="empty"):
        MemoryBank(MemoryConfig()).sample(4, torch.Generator())
