import math

import numpy as np
import pytest
import torch

from free_common.data.base import ClassImages
from free_common.evaluation import (
    EvaluationError,
    confidence_interval,
    evaluate,
    evaluation_copy,
    initial_head,
    select_best,
    select_finetune,
    select_finetune_lr,
)
from free_common.models import ModelSpec, build_model

SPEC = ModelSpec("conv4", image_size=16, width=4, num_classes=3)


def assert_close(actual, expected):
    """torch.allclose with float32 tolerances (cheaper to import than torch.testing)."""
    assert torch.allclose(actual, expected, rtol=1e-5, atol=1e-6), (actual, expected)


def blob_split(num_classes: int = 4, per_class: int = 6, seed: int = 0) -> ClassImages:
    """Class c is a bright 4x4 square at its own position on a faint noise background."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), per_class).astype(np.int64)
    images = rng.integers(0, 40, (len(labels), 1, 16, 16)).astype(np.uint8)
    for i, c in enumerate(labels):
        row, col = divmod(int(c), 4)
        images[i, 0, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4] = 255
    return ClassImages("blobs/test", images, labels, tuple(f"c{i}" for i in range(num_classes)))


def test_confidence_interval_formula():
    mean, ci = confidence_interval([0.0, 1.0, 0.5, 0.5])
    assert mean == pytest.approx(0.5)
    assert ci == pytest.approx(1.96 * math.sqrt(0.125) / 2)


def test_result_carries_mean_and_ci_of_its_accuracies():
    result = evaluate(
        build_model(SPEC), blob_split(), n_way=2, k_shot=1, q_query=2, n_tasks=5, mode="proto"
    )
    assert result.accuracies.shape == (5,)
    assert (result.mean, result.ci95) == pytest.approx(confidence_interval(result.accuracies))
    assert result.format().count("±") == 1 and result.to_dict()["n_tasks"] == 5


def test_proto_separates_a_separable_problem():
    wide = ModelSpec("conv4", image_size=16, width=16, num_classes=4)
    result = evaluate(
        build_model(wide), blob_split(), n_way=4, k_shot=2, q_query=3, n_tasks=8, mode="proto"
    )
    assert result.mean > 0.95


def test_finetune_never_mutates_the_model_and_resets_a_mismatched_head():
    # Prepare: an ordinary classifier (running statistics) with 3 outputs, evaluated 2-way.
    model = build_model(SPEC)
    model(torch.rand(4, 1, 16, 16))  # move the running statistics away from their defaults
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # Execute
    result = evaluate(
        model, blob_split(), n_way=2, k_shot=1, q_query=2, n_tasks=3, steps=2, mode="finetune"
    )
    # Assert
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.num_classes == 3 and model.training
    assert 0.0 <= result.mean <= 1.0 and result.steps == 2


def test_evaluation_copy_keeps_a_matching_head_and_uses_batch_statistics():
    model = build_model(SPEC, batch_stats=False)
    copy = evaluation_copy(model, n_way=3, seed=0)
    assert_close(copy.head.weight, model.head.weight)
    assert all(
        m.running_mean is None for m in copy.modules() if isinstance(m, torch.nn.BatchNorm2d)
    )
    reset = evaluation_copy(model, n_way=2, seed=0)
    assert reset.num_classes == 2
    assert_close(reset.head.weight, evaluation_copy(model, n_way=2, seed=0).head.weight)


@pytest.mark.parametrize("mode", ["finetune", "proto"])
def test_same_seed_gives_identical_results(mode):
    model, data = build_model(SPEC), blob_split()
    kwargs = {"n_way": 2, "k_shot": 1, "q_query": 2, "n_tasks": 4, "steps": 1, "mode": mode}
    a = evaluate(model, data, seed=7, **kwargs)
    b = evaluate(model, data, seed=7, **kwargs)
    np.testing.assert_array_equal(a.accuracies, b.accuracies)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "knn"}, "unknown mode"),
        ({"n_way": 9}, "fewer than 9"),
        ({"k_shot": 0}, "k_shot must be"),
        ({"n_tasks": 0}, "n_tasks >= 1"),
        ({"model_spec": ModelSpec("conv4", image_size=32, width=4)}, "the model expects"),
    ],
)
def test_bad_settings_are_rejected(kwargs, message):
    kwargs = dict(kwargs)
    model = build_model(kwargs.pop("model_spec", SPEC))
    settings = {"n_way": 2, "k_shot": 1, "q_query": 2, "n_tasks": 1, **kwargs}
    with pytest.raises(EvaluationError, match=message):
        evaluate(model, blob_split(), **settings)


def test_select_best_evaluates_every_candidate_on_the_same_tasks():
    data = blob_split()
    candidates = {"a": build_model(SPEC), "b": build_model(SPEC)}
    best, results = select_best(
        candidates, data, n_way=2, k_shot=1, q_query=2, mode="proto", n_tasks=3
    )
    assert set(results) == {"a", "b"}
    assert results[best].mean == max(r.mean for r in results.values())


def test_select_finetune_lr_tries_every_rate_on_the_same_tasks_and_flags_the_edge():
    model = build_model(SPEC)
    lrs = (0.01, 0.1, 1.0)
    chosen = select_finetune_lr(
        model, blob_split(), k_shot=1, lrs=lrs, n_tasks=3, seed=4, n_way=2, q_query=2
    )
    assert list(chosen.val) == list(lrs)
    for lr in lrs:  # each candidate's figure is an ordinary evaluation at that rate
        direct = evaluate(
            model, blob_split(), n_way=2, k_shot=1, q_query=2, n_tasks=3, seed=4, lr=lr
        )
        assert chosen.val[lr] == direct.mean
    assert chosen.val[chosen.lr] == max(chosen.val.values())
    assert chosen.at_edge == (chosen.lr in (0.01, 1.0))


def test_select_finetune_lr_breaks_ties_by_grid_order():
    # Zero fine-tuning steps: every rate scores the same, so the first one is chosen.
    model = build_model(SPEC)
    for lrs in ((0.1, 0.01), (0.01, 0.1)):
        chosen = select_finetune_lr(
            model, blob_split(), k_shot=1, lrs=lrs, n_tasks=2, seed=0, n_way=2, q_query=2, steps=0
        )
        assert chosen.lr == lrs[0]


@pytest.mark.parametrize("lrs", [(), (0.1, 0.1), (0.0, 0.1), (-0.01,)])
def test_select_finetune_lr_refuses_a_bad_grid(lrs):
    with pytest.raises(EvaluationError, match="distinct positive learning rates"):
        select_finetune_lr(build_model(SPEC), blob_split(), k_shot=1, lrs=lrs, n_tasks=1, seed=0)


def test_zero_head_favours_no_class_before_the_first_step():
    # With a zero head every logit ties, so before any step each query goes to class 0:
    # exactly 1/n_way of a balanced query set is right, whatever the backbone.
    result = evaluate(
        build_model(SPEC),
        blob_split(),
        n_way=4,
        k_shot=1,
        q_query=3,
        n_tasks=5,
        steps=0,
        head="zero",
    )
    assert result.mean == pytest.approx(0.25) and result.head == "zero"


def test_proto_head_is_the_nearest_centroid_classifier_of_the_support_set():
    model = evaluation_copy(build_model(SPEC), n_way=3, seed=0)
    support = torch.rand(6, 1, 16, 16)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    weight, bias = initial_head(model, support, labels, 3, "proto")
    features = model.forward_features(support).detach()
    prototypes = torch.stack([features[labels == c].mean(0) for c in range(3)])
    queries = torch.randn(5, features.shape[1])
    logits = queries @ weight.T + bias
    # Logits differ from minus the squared distances only by ||q||^2, the same for every class.
    distances = (queries.unsqueeze(1) - prototypes.unsqueeze(0)).pow(2).sum(2)
    expected = queries.pow(2).sum(1, keepdim=True) - distances
    assert torch.allclose(logits, expected, atol=1e-4), (logits, expected)


def test_proto_head_needs_no_learned_head_and_separates_a_separable_problem():
    # A 3-output model on 4-way tasks: no learned head fits, the prototype head does.
    wide = ModelSpec("conv4", image_size=16, width=16, num_classes=3)
    result = evaluate(
        build_model(wide),
        blob_split(),
        n_way=4,
        k_shot=2,
        q_query=3,
        n_tasks=8,
        steps=0,
        head="proto",
    )
    assert result.mean > 0.95


def test_an_unknown_head_is_refused():
    with pytest.raises(EvaluationError, match="unknown head"):
        evaluate(
            build_model(SPEC),
            blob_split(),
            n_way=2,
            k_shot=1,
            q_query=2,
            n_tasks=1,
            head="random",  # type: ignore[arg-type]
        )


def test_select_finetune_tries_every_head_and_rate_on_the_same_tasks():
    model, data = build_model(SPEC), blob_split()
    choice = select_finetune(
        model,
        data,
        k_shot=1,
        lrs=(0.01, 0.1),
        heads=("zero", "proto"),
        n_tasks=3,
        seed=2,
        n_way=2,
        q_query=2,
    )
    assert list(choice.val) == [("zero", 0.01), ("zero", 0.1), ("proto", 0.01), ("proto", 0.1)]
    direct = evaluate(
        model, data, n_way=2, k_shot=1, q_query=2, n_tasks=3, seed=2, lr=0.1, head="proto"
    )
    assert choice.val[("proto", 0.1)] == direct.mean
    assert choice.val[(choice.head, choice.lr)] == max(choice.val.values())
    assert choice.val_table()["zero"] == {
        "0.01": choice.val[("zero", 0.01)],
        "0.1": choice.val[("zero", 0.1)],
    }


@pytest.mark.parametrize("heads", [(), ("zero", "zero"), ("random",)])
def test_select_finetune_refuses_a_bad_head_grid(heads):
    with pytest.raises(EvaluationError, match="distinct heads"):
        select_finetune(
            build_model(SPEC), blob_split(), k_shot=1, lrs=(0.1,), heads=heads, n_tasks=1, seed=0
        )


def test_channels_last_evaluation_gives_the_accuracies_of_the_plain_layout():
    # The evaluation copy runs in channels-last layout for speed; its forward must agree
    # with the plain layout to float tolerance.
    model = build_model(SPEC)
    plain = build_model(SPEC, batch_stats=True)
    plain.load_state_dict(evaluation_copy(model, 3, seed=0).state_dict())
    images = torch.rand(6, 1, 16, 16)
    fast = evaluation_copy(model, 3, seed=0)
    assert_close(fast(images.contiguous(memory_format=torch.channels_last)), plain.eval()(images))
