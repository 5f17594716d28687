import numpy as np
import pytest

from client.local_training import LocalTrainingError, stratified_split, train_local_classifier
from free_common.data.base import ClassImages
from free_common.models import ModelSpec, build_model


def owner_data(num_classes: int = 3, per_class: int = 10, seed: int = 0) -> ClassImages:
    """Class c: a bright horizontal band at its own height, plus noise (an easy problem)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), per_class).astype(np.int64)
    images = rng.integers(0, 60, (len(labels), 1, 16, 16)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, 0, 5 * int(c) : 5 * int(c) + 3, :] = 250
    return ClassImages("owner", images, labels, tuple(f"c{i}" for i in range(num_classes)))


def spec(num_classes: int = 3, image_size: int = 16) -> ModelSpec:
    return ModelSpec("conv4", image_size=image_size, width=4, num_classes=num_classes)


def test_reaches_high_holdout_accuracy_on_an_easy_problem():
    result = train_local_classifier(owner_data(), spec(), epochs=30, seed=0, device="cpu")
    assert result.holdout_accuracy >= 0.99
    assert result.history[result.best_epoch - 1].holdout_accuracy == result.holdout_accuracy
    assert result.num_examples == 24 and len(result.history) == 30
    build_model(result.spec).load_state_dict(result.state_dict)  # weights fit the spec


def test_same_seed_gives_the_same_weights():
    a = train_local_classifier(owner_data(), spec(), epochs=2, seed=3, device="cpu")
    b = train_local_classifier(owner_data(), spec(), epochs=2, seed=3, device="cpu", augment=True)
    c = train_local_classifier(owner_data(), spec(), epochs=2, seed=3, device="cpu")
    assert all((a.state_dict[k] == c.state_dict[k]).all() for k in a.state_dict)
    assert len(b.history) == 2


def test_split_is_stratified_disjoint_and_complete():
    labels = np.repeat(np.arange(3), [10, 5, 2]).astype(np.int64)
    train, held = stratified_split(labels, 3, 0.2, seed=0)
    assert np.bincount(labels[held]).tolist() == [2, 1, 1]
    assert sorted(np.concatenate([train, held]).tolist()) == list(range(len(labels)))


@pytest.mark.parametrize(
    ("data", "model_spec", "message"),
    [
        (owner_data(num_classes=1), spec(num_classes=2), ">= 2 classes"),
        (owner_data(per_class=1), spec(), "at least 2 per class"),
        (owner_data(), spec(num_classes=4), "spec.num_classes=4"),
        (owner_data(), spec(image_size=32), "spec expects"),
    ],
)
def test_bad_inputs_are_clear_errors(data, model_spec, message):
    with pytest.raises(LocalTrainingError, match=message):
        train_local_classifier(data, model_spec, epochs=1, device="cpu")


def test_holdout_fraction_must_be_a_fraction():
    with pytest.raises(LocalTrainingError, match="holdout must be"):
        train_local_classifier(owner_data(), spec(), holdout=1.0, device="cpu")
