import pytest
import torch
import torch.nn.functional as F
from torch import nn

from free_common.data.episodes import Episode
from free_common.maml import (
    MamlError,
    MamlTrainer,
    inner_adapt,
    maml_outer_loss,
    model_params,
    sgd_step,
)
from free_common.models import ModelSpec, build_model


def assert_close(actual, expected):
    """torch.allclose with float32 tolerances (cheaper to import than torch.testing)."""
    assert torch.allclose(actual, expected, rtol=1e-5, atol=1e-6), (actual, expected)


def tiny_conv4(num_classes: int = 2):
    spec = ModelSpec("conv4", image_size=16, width=4, num_classes=num_classes)
    return build_model(spec, batch_stats=True)


def tiny_episode(seed: int, n_way: int = 2, k_shot: int = 2, q_query: int = 3) -> Episode:
    g = torch.Generator().manual_seed(seed)
    return Episode(
        support_images=torch.rand(n_way * k_shot, 1, 16, 16, generator=g),
        support_labels=torch.arange(n_way).repeat_interleave(k_shot),
        query_images=torch.rand(n_way * q_query, 1, 16, 16, generator=g),
        query_labels=torch.arange(n_way).repeat_interleave(q_query),
        classes=tuple(range(n_way)),
    )


def manual_sgd_step(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
    """Cross-entropy gradient of logits = x @ w.T, by hand: (softmax - onehot).T @ x / B."""
    probs = torch.softmax(x @ w.T, dim=1)
    onehot = F.one_hot(y, w.shape[0]).float()
    return w - lr * (probs - onehot).T @ x / x.shape[0]


def test_inner_adapt_matches_hand_computed_sgd():
    # Prepare
    model = nn.Linear(3, 2, bias=False)
    w0 = torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.5, -0.1]])
    x = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [0.5, 0.5, 0.5]])
    y = torch.tensor([0, 1, 1])
    # Execute
    fast = inner_adapt(
        model, {"weight": w0.clone().requires_grad_()}, x, y, steps=2, lr=0.5, create_graph=False
    )
    # Assert
    expected = manual_sgd_step(manual_sgd_step(w0, x, y, 0.5), x, y, 0.5)
    assert_close(fast["weight"], expected)


def test_sgd_step_keeps_a_one_channel_weight_channels_last():
    # Prepare: (C_out, 1, k, k) is contiguous and channels-last at once; the plain
    # arithmetic returns it with contiguous strides (the slow convolution layout on CPU)
    weight = torch.randn(4, 1, 3, 3).to(memory_format=torch.channels_last).requires_grad_(True)
    assert weight.stride() == (9, 1, 3, 1)
    grad = torch.randn(4, 1, 3, 3)
    assert (weight - 0.1 * grad).stride() != weight.stride()

    # Act
    stepped = sgd_step(weight, grad, 0.1)

    # Assert: same values and strides, and still differentiable w.r.t. the weight
    assert stepped.stride() == weight.stride()
    assert_close(stepped, weight.detach() - 0.1 * grad)
    stepped.sum().backward()
    assert_close(weight.grad, torch.ones_like(weight))


def test_inner_adapt_keeps_every_weight_layout_of_a_channels_last_model():
    # Prepare: a grey-image model in the evaluation's channels-last layout
    model = tiny_conv4().to(memory_format=torch.channels_last)
    episode = tiny_episode(0)
    start = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}

    # Act
    fast = inner_adapt(
        model,
        start,
        episode.support_images,
        episode.support_labels,
        steps=2,
        lr=0.1,
        create_graph=False,
    )

    # Assert
    assert {n: t.stride() for n, t in fast.items()} == {n: t.stride() for n, t in start.items()}


def test_zero_steps_returns_the_same_tensors():
    model = nn.Linear(3, 2)
    params = model_params(model)
    fast = inner_adapt(
        model, params, torch.ones(1, 3), torch.zeros(1).long(), steps=0, lr=0.1, create_graph=True
    )
    assert all(fast[n] is params[n] for n in params)


def test_first_order_adaptation_is_identity_in_the_initial_weights():
    # d(adapted)/d(initial) is the identity when the step's gradient is a constant.
    model = nn.Linear(3, 2)
    params = model_params(model)
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    first = inner_adapt(model, params, x, y, steps=3, lr=0.3, create_graph=False)
    second = inner_adapt(model, params, x, y, steps=3, lr=0.3, create_graph=True)
    probe = torch.randn(2, 3)
    (d_first,) = torch.autograd.grad((first["weight"] * probe).sum(), params["weight"])
    (d_second,) = torch.autograd.grad((second["weight"] * probe).sum(), params["weight"])
    assert_close(d_first, probe)
    assert not torch.allclose(d_second, probe)


def test_first_order_meta_gradient_is_the_query_gradient_at_the_adapted_weights():
    model = tiny_conv4()
    task = tiny_episode(0)
    loss, _ = maml_outer_loss(model, [task], inner_steps=2, inner_lr=0.1, first_order=True)
    meta_grads = torch.autograd.grad(loss, list(model.parameters()))

    fast = inner_adapt(
        model,
        model_params(model),
        task.support_images,
        task.support_labels,
        steps=2,
        lr=0.1,
        create_graph=False,
    )
    detached = {n: t.detach().requires_grad_() for n, t in fast.items()}
    query_loss = F.cross_entropy(
        torch.func.functional_call(model, detached, (task.query_images,)), task.query_labels
    )
    expected = torch.autograd.grad(query_loss, list(detached.values()))
    for got, want in zip(meta_grads, expected, strict=True):
        assert_close(got, want)


def test_second_order_meta_gradients_reach_every_parameter_and_differ_from_first_order():
    model = tiny_conv4()
    tasks = [tiny_episode(1), tiny_episode(2)]
    kwargs = {"inner_steps": 2, "inner_lr": 0.1}
    second, _ = maml_outer_loss(model, tasks, **kwargs)
    first, _ = maml_outer_loss(model, tasks, first_order=True, **kwargs)
    g2 = torch.autograd.grad(second, list(model.parameters()))
    g1 = torch.autograd.grad(first, list(model.parameters()))
    assert_close(second, first)  # same forward value
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in g2)
    assert any(not torch.allclose(a, b) for a, b in zip(g1, g2, strict=True))


def test_outer_loss_reports_query_accuracy_in_unit_interval():
    _, accuracy = maml_outer_loss(tiny_conv4(), [tiny_episode(3)], inner_steps=1, inner_lr=0.1)
    assert 0.0 <= accuracy <= 1.0


def test_trainer_step_updates_the_initialisation_and_checkpoints():
    model = tiny_conv4()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = MamlTrainer(model, inner_steps=1, inner_lr=0.1, outer_lr=1e-2)
    result = trainer.step([tiny_episode(4), tiny_episode(5)])
    assert torch.isfinite(torch.tensor(result.loss))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))

    restored = MamlTrainer(model, inner_steps=1, inner_lr=0.1)
    restored.load_state_dict(trainer.state_dict())
    assert restored.steps_done == 1
    assert (
        restored.optimizer.state_dict()["state"].keys()
        == trainer.optimizer.state_dict()["state"].keys()
    )


def test_too_small_head_is_a_clear_error():
    with pytest.raises(MamlError, match="head needs at least 3 outputs"):
        maml_outer_loss(
            tiny_conv4(num_classes=2), [tiny_episode(0, n_way=3)], inner_steps=1, inner_lr=0.1
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"steps": -1}, "steps must be"), ({"steps": 1, "frozen": True}, "do not require grad")],
)
def test_inner_adapt_rejects_bad_input(kwargs, message):
    model = nn.Linear(3, 2)
    params = {n: p.detach() if kwargs.get("frozen") else p for n, p in model.named_parameters()}
    with pytest.raises(MamlError, match=message):
        inner_adapt(
            model,
            params,
            torch.ones(2, 3),
            torch.zeros(2).long(),
            steps=kwargs["steps"],
            lr=0.1,
            create_graph=False,
        )


def test_empty_meta_batch_is_rejected():
    with pytest.raises(MamlError, match="at least one task"):
        maml_outer_loss(tiny_conv4(), [], inner_steps=1, inner_lr=0.1)
