"""The torch episode graphs against an independent reference (hooks, cdist, autograd)."""

import pytest
import torch
import torch.nn.functional as F

from free_common.export.episode_graph import (
    EpisodeFeatures,
    HeadConfig,
    episode_module,
    proto_maml_head,
    prototypes,
    squared_euclidean_logits,
)
from free_common.export.reference import reference_logits, support_stats_features
from free_common.models import ModelSpec, build_model

SPEC = ModelSpec("conv4", in_channels=1, image_size=16, width=4)


def _episode(n_way: int, k_shot: int, n_query: int) -> tuple[torch.Tensor, ...]:
    support = torch.rand(n_way * k_shot, 1, 16, 16)
    labels = torch.arange(n_way * k_shot) % n_way
    return support, labels, F.one_hot(labels, n_way).float(), torch.rand(n_query, 1, 16, 16)


def test_support_stats_features_match_fused_batchnorm_reference() -> None:
    # Prepare
    model = build_model(SPEC, batch_stats=True)
    support, _, _, query = _episode(3, 2, 5)
    # Execute
    ours = EpisodeFeatures(model)(support, query)
    ref = support_stats_features(model, support, query)
    # Assert
    torch.testing.assert_close(ours[0], ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours[1], ref[1], atol=1e-5, rtol=1e-5)


def test_support_features_equal_train_mode_batch_statistics() -> None:
    model = build_model(SPEC, batch_stats=True).train()
    support, _, _, query = _episode(3, 2, 4)
    with torch.no_grad():
        expected = model.forward_features(support)
    torch.testing.assert_close(
        EpisodeFeatures(model)(support, query)[0], expected, atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("kind", ["proto", "protomaml"])
def test_each_query_is_classified_independently(kind: str) -> None:
    graph = episode_module(build_model(SPEC, batch_stats=True), HeadConfig(kind=kind))
    support, _, onehot, query = _episode(3, 2, 6)
    with torch.no_grad():
        full = graph(support, onehot, query)
        alone = torch.cat([graph(support, onehot, query[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(full, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["proto", "protomaml"])
def test_graph_matches_reference_rule(kind: str) -> None:
    model = build_model(SPEC, batch_stats=True)
    head = HeadConfig(kind=kind, steps=3, lr=0.5)
    support, labels, onehot, query = _episode(4, 3, 7)
    with torch.no_grad():
        ours = episode_module(model, head)(support, onehot, query)
    ref = reference_logits(model, support, labels, query, 4, head)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_closed_form_head_gradient_matches_autograd_by_hand() -> None:
    # 2 classes, 2 features, 2 support points: one SGD step worked out with autograd.
    feats = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    onehot = torch.eye(2)
    weight, bias = proto_maml_head(feats, onehot, steps=1, lr=0.1, scale=1.0)
    w0 = (2.0 * feats).requires_grad_(True)
    b0 = (-(feats * feats).sum(1)).requires_grad_(True)
    loss = F.cross_entropy(feats @ w0.T + b0, torch.tensor([0, 1]))
    gw, gb = torch.autograd.grad(loss, (w0, b0))
    torch.testing.assert_close(weight, w0 - 0.1 * gw)
    torch.testing.assert_close(bias, b0 - 0.1 * gb)


def test_prototype_logits_are_scaled_negative_squared_distances() -> None:
    feats = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]])
    onehot = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    protos = prototypes(feats, onehot)
    logits = squared_euclidean_logits(torch.tensor([[1.0, 1.0]]), protos, scale=0.5)
    torch.testing.assert_close(protos, torch.tensor([[1.0, 0.0], [0.0, 4.0]]))
    torch.testing.assert_close(logits, torch.tensor([[-0.5, -5.0]]))


def test_caller_model_is_not_modified() -> None:
    model = build_model(SPEC, batch_stats=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    episode_module(model, HeadConfig())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize(
    "kwargs", [{"kind": "ridge"}, {"kind": "protomaml", "steps": 0}, {"scale": -1.0}]
)
def test_bad_head_config_raises(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        HeadConfig(**kwargs)  # type: ignore[arg-type]
