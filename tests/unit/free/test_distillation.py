import math

import pytest
import torch
import torch.nn.functional as F

from free_common.free.distillation import (
    adversarial_loss,
    bn_statistics_loss,
    kd_loss,
    match_classes,
    supervision_loss,
)


def _hand_kl(student: torch.Tensor, teacher: torch.Tensor, t: float) -> float:
    """sum_c p_t log(p_t / p_s), averaged over rows, times T^2, computed element by element."""
    total = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        zs = sum(math.exp(v / t) for v in s_row)
        zt = sum(math.exp(v / t) for v in t_row)
        for sv, tv in zip(s_row, t_row, strict=True):
            ps, pt = math.exp(sv / t) / zs, math.exp(tv / t) / zt
            total += pt * math.log(pt / ps)
    return total / len(student) * t * t


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_equals_kl_by_hand(temperature: float) -> None:
    student = torch.tensor([[1.0, -0.5, 2.0], [0.3, 0.1, -1.2]], dtype=torch.float64)
    teacher = torch.tensor([[0.2, 1.5, -0.7], [2.0, -1.0, 0.5]], dtype=torch.float64)
    got = kd_loss(student, teacher, temperature)
    assert got.item() == pytest.approx(_hand_kl(student, teacher, temperature), rel=1e-10)


def test_kd_is_zero_for_equal_logits_and_positive_otherwise() -> None:
    logits = torch.randn(5, 4)
    assert kd_loss(logits, logits).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(torch.randn(5, 4), logits).item() > 0


def test_kd_uses_first_columns_of_a_wider_student() -> None:
    student, teacher = torch.randn(4, 5), torch.randn(4, 3)
    assert torch.equal(kd_loss(student, teacher), kd_loss(student[:, :3], teacher))
    with pytest.raises(ValueError, match="outputs"):
        match_classes(torch.randn(4, 2), 3)


def test_kd_gradient_does_not_reach_teacher() -> None:
    student = torch.randn(3, 3, requires_grad=True)
    teacher = torch.randn(3, 3, requires_grad=True)
    kd_loss(student, teacher).backward()
    assert student.grad is not None and teacher.grad is None


def test_hard_labels_is_cross_entropy() -> None:
    student, teacher = torch.randn(6, 3), torch.randn(6, 3)
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    got = supervision_loss(student, teacher, targets, temperature=2.0, hard_labels=True)
    assert torch.allclose(got, F.cross_entropy(student, targets))


def test_adversarial_counts_only_agreeing_samples() -> None:
    teacher = torch.tensor([[3.0, 0.0], [3.0, 0.0]])
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # row 0 agrees, row 1 does not
    p_t = teacher.softmax(1)
    kl0 = (p_t[0] * (p_t[0].log() - student[0].log_softmax(0))).sum()
    assert adversarial_loss(student, teacher).item() == pytest.approx(-kl0.item() / 2, rel=1e-5)


def test_bn_statistics_hook_collects_one_term_per_layer() -> None:
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3),
        torch.nn.BatchNorm2d(2),
        torch.nn.Conv2d(2, 2, 3),
        torch.nn.BatchNorm2d(2),
    ).eval()
    with bn_statistics_loss(model) as terms:
        model(torch.rand(4, 1, 8, 8))
    assert len(terms) == 2 and all(t.item() >= 0 for t in terms)
    model(torch.rand(4, 1, 8, 8))
    assert len(terms) == 2  # hooks removed on exit


def test_bn_statistics_term_is_the_distance_of_the_batch_statistics() -> None:
    # Prepare: inputs far from zero mean, running statistics away from the batch's
    bn = torch.nn.BatchNorm2d(3).eval()
    bn.running_mean.fill_(1.0)
    bn.running_var.fill_(2.0)
    x = 50 + 3 * torch.randn(6, 3, 5, 5, generator=torch.Generator().manual_seed(0))

    # Act
    with bn_statistics_loss(bn) as terms:
        bn(x)

    # Assert: the same value as Tensor.mean / Tensor.var (biased) give
    mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
    expected = torch.linalg.vector_norm(mean - 1.0) + torch.linalg.vector_norm(var - 2.0)
    assert torch.allclose(terms[0], expected, rtol=1e-5)
