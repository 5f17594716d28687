from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from free_common.config import FreeConfig, MetaLearnerConfig
from free_common.free.distillation import kd_loss
from free_common.free.meta_learner import DistillBatch, build_meta_learner, meta_learner_step

ML = FreeConfig.preset("test").meta_learner


def _batches(n: int) -> list[DistillBatch]:
    g = torch.Generator().manual_seed(0)
    return [
        DistillBatch(
            f"t{i}",
            torch.rand(6, 1, 16, 16, generator=g),
            torch.randn(6, 3, generator=g),
            torch.arange(3).repeat(2),
        )
        for i in range(n)
    ]


def _learner() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_meta_learner(ML)


def _capture_grads(cfg: MetaLearnerConfig, batches: list[DistillBatch]) -> list[torch.Tensor]:
    """The gradient the outer optimiser receives (SGD lr 0 so weights stay put)."""
    learner = _learner()
    outer = torch.optim.SGD(learner.parameters(), lr=0.0)
    meta_learner_step(learner, outer, batches, cfg)
    return [p.grad.clone() for p in learner.parameters()]


def test_alignment_with_one_teacher_and_sgd_is_scaled_gradient() -> None:
    """One teacher, SGD inner step: grad := (phi - (phi - a*g)) * scale = a * scale * g."""
    cfg = replace(ML, inner_optimizer="sgd", inner_lr=0.1, reptile_scale=3.0)
    batches = _batches(1)
    learner = _learner()
    loss = kd_loss(learner(batches[0].images), batches[0].teacher_logits)
    expected = torch.autograd.grad(loss, list(learner.parameters()))
    for got, g in zip(_capture_grads(cfg, batches), expected, strict=True):
        assert torch.allclose(got, 0.3 * g, atol=1e-6)


def test_published_inner_adam_hands_the_outer_step_a_sign_vector() -> None:
    """One teacher, the published fresh inner Adam: its first step is lr * g / (|g| + eps),
    so the outer gradient is lr * scale * sign(g) wherever |g| >> eps, whatever |g| is."""
    cfg = replace(ML, inner_optimizer="adam", inner_lr=1e-3, reptile_scale=67.0)
    batches = _batches(1)
    learner = _learner()
    loss = kd_loss(learner(batches[0].images), batches[0].teacher_logits)
    expected = torch.autograd.grad(loss, list(learner.parameters()))
    for got, g in zip(_capture_grads(cfg, batches), expected, strict=True):
        clear = g.abs() > 1e-5
        assert torch.allclose(got[clear], 0.067 * g[clear].sign(), rtol=1e-2, atol=1e-6)


def test_without_alignment_the_gradient_is_the_summed_kd_gradient() -> None:
    cfg = replace(ML, alignment=False)
    batches = _batches(3)
    learner = _learner()
    total = sum(kd_loss(learner(b.images), b.teacher_logits) for b in batches)
    expected = torch.autograd.grad(total, list(learner.parameters()))
    for got, g in zip(_capture_grads(cfg, batches), expected, strict=True):
        assert torch.allclose(got, g, atol=1e-6)


def test_sequential_steps_differ_from_joint_step() -> None:
    cfg = replace(ML, inner_optimizer="sgd", inner_lr=0.5, reptile_scale=2.0)
    aligned = _capture_grads(cfg, _batches(2))
    joint = _capture_grads(replace(cfg, alignment=False), _batches(2))
    scaled = [g * 0.5 * 2.0 for g in joint]  # first-order part of the aligned update
    assert any(not torch.allclose(a, b, atol=1e-6) for a, b in zip(aligned, scaled, strict=True))


def test_hard_labels_uses_generator_targets() -> None:
    cfg = replace(ML, alignment=False, hard_labels=True)
    batches = _batches(1)
    learner = _learner()
    loss = F.cross_entropy(learner(batches[0].images)[:, :3], batches[0].targets)
    expected = torch.autograd.grad(loss, list(learner.parameters()))
    for got, g in zip(_capture_grads(cfg, batches), expected, strict=True):
        assert torch.allclose(got, g, atol=1e-6)


def test_nan_teacher_logits_name_the_term() -> None:
    from free_common.free.errors import NonFiniteLossError

    batch = _batches(1)[0]
    bad = DistillBatch(
        "t0", batch.images, torch.full_like(batch.teacher_logits, float("nan")), batch.targets
    )
    learner = _learner()
    with pytest.raises(NonFiniteLossError, match="meta_learner/kd"):
        meta_learner_step(learner, torch.optim.Adam(learner.parameters()), [bad], ML)
