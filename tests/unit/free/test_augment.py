import torch

from free_common.free.augment import augment, convert_channels, random_crop, to_model_input


def test_crop_keeps_shape_and_is_differentiable() -> None:
    x = torch.rand(5, 1, 8, 8, requires_grad=True)
    y = random_crop(x, 2, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_crop_is_a_shift_with_zero_fill() -> None:
    x = torch.rand(50, 1, 6, 6) + 1.0  # strictly positive: zeros mark the padding
    y = random_crop(x, 1, torch.Generator().manual_seed(1))
    for a, b in zip(x, y, strict=True):
        inner = b[b > 0]
        assert inner.numel() >= 25 and set(inner.tolist()) <= set(a.flatten().tolist())


def test_zero_padding_and_no_flip_is_identity() -> None:
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(augment(x, padding=0, flip=False, generator=torch.Generator()), x)


def test_flip_draws_mirrored_images() -> None:
    x = torch.rand(64, 1, 4, 4)
    y = augment(x, padding=0, flip=True, generator=torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(a.flip(-1), b) for a, b in zip(x, y, strict=True)])
    assert 0 < int(flipped.sum()) < 64


def test_same_generator_state_gives_same_augmentation() -> None:
    x = torch.rand(4, 1, 8, 8)
    a = augment(x, padding=2, flip=True, generator=torch.Generator().manual_seed(3))
    b = augment(x, padding=2, flip=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_model_input_resizes_and_converts_channels() -> None:
    x = torch.rand(2, 1, 16, 16)
    y = to_model_input(x, 32, 3)
    assert y.shape == (2, 3, 32, 32)
    assert torch.equal(y[:, 0], y[:, 2])
    assert to_model_input(x, 16, 1) is x
    rgb = torch.rand(2, 3, 8, 8)
    assert torch.allclose(convert_channels(rgb, 1), rgb.mean(1, keepdim=True))
