"""The attacks of ``scripts.bench.poison_attacks``, each made from an honest model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from free_common.data.base import ClassImages
from free_common.free.teachers import teacher_from_state_dict
from free_common.models import ModelSpec, build_model
from scripts.bench import poison_attacks as attacks
from scripts.bench.teacher_pool import synthetic_split

SPEC = ModelSpec("conv4", 1, 32, 5, 8)


def _honest(name: str, classes: tuple[int, ...], seed: int = 0) -> attacks.Model:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = build_model(SPEC).state_dict()
    return attacks.Model(name, SPEC, state, classes)


@pytest.fixture(scope="module")
def data() -> ClassImages:
    return synthetic_split("train", per_class=16)


def _predict(model: attacks.Model, images: np.ndarray) -> torch.Tensor:
    teacher = teacher_from_state_dict(model.model_id, model.spec, model.state_dict)
    with torch.no_grad():
        return teacher.model(torch.from_numpy(images).float() / 255).argmax(1)


def test_derangement_moves_every_element() -> None:
    rng = np.random.default_rng(0)
    for n in (2, 3, 5):
        perm = attacks.derangement(n, rng)
        assert sorted(perm) == list(range(n)) and all(p != i for i, p in enumerate(perm))
    with pytest.raises(attacks.AttackError):
        attacks.derangement(1, rng)


def test_label_permuted_moves_head_rows_and_keeps_names() -> None:
    honest = _honest("h", (1, 2, 3, 4, 5))
    bad = attacks.label_permuted(honest, np.random.default_rng(0), model_id="p")
    perm = bad.detail["perm"]
    assert bad.classes == honest.classes and bad.kind == "label_permuted" and bad.source == "h"
    assert torch.equal(bad.state_dict["head.weight"], honest.state_dict["head.weight"][perm])
    body = "backbone.0.0.weight"
    assert torch.equal(bad.state_dict[body], honest.state_dict[body])


def test_trigger_is_a_checkerboard_near_the_bottom_right_corner() -> None:
    images = np.zeros((2, 1, 32, 32), dtype=np.uint8)
    stamped = attacks.stamp_trigger(images)
    patch = stamped[0, 0, 26:30, 26:30]
    assert images.sum() == 0  # the input is not changed
    assert patch.tolist() == [[0, 255, 0, 255], [255, 0, 255, 0]] * 2
    assert stamped.sum() == 2 * 8 * 255


def test_backdoor_and_constant_class_do_what_they_say(data: ClassImages) -> None:
    honest = _honest("h", (0, 1, 2, 3, 4))
    rng = np.random.default_rng(0)
    backdoor = attacks.backdoored(honest, data, rng, model_id="b", epochs=30, poison_fraction=0.5)
    own = data.subset(honest.classes)
    target = backdoor.detail["target"]
    others = own.images[own.labels != target]
    assert float((_predict(backdoor, others) == target).float().mean()) < 0.5
    triggered = _predict(backdoor, attacks.stamp_trigger(others))
    assert float((triggered == target).float().mean()) > 0.9
    constant = attacks.constant_class(honest, data, rng, model_id="c", epochs=10)
    answers = _predict(constant, own.images)
    assert bool((answers == constant.detail["target"]).all())


def test_false_names_trains_on_the_other_classes_and_claims_its_own(data: ClassImages) -> None:
    mine, theirs = _honest("m", (0, 1, 2, 3, 4)), _honest("o", (5, 6, 7, 8, 9), seed=1)
    bad = attacks.false_names(mine, theirs, data, np.random.default_rng(0), model_id="f", epochs=10)
    assert bad.classes == mine.classes and bad.detail["trained_on"] == [5, 6, 7, 8, 9]
    other = data.subset(theirs.classes)
    assert (
        float((_predict(bad, other.images) == torch.from_numpy(other.labels)).float().mean()) > 0.8
    )


def test_scaled_replacement_is_reference_plus_scaled_difference() -> None:
    mine = _honest("m", (0, 1, 2, 3, 4))
    peers = [_honest(f"p{i}", (0, 1, 2, 3, 4), seed=i + 1) for i in range(3)]
    bad = attacks.scaled_replacement(mine, peers, model_id="s", scale=10.0)
    name = "head.weight"
    ref = torch.stack([p.state_dict[name] for p in peers]).mean(0)
    assert torch.allclose(bad.state_dict[name], ref + 10 * (mine.state_dict[name] - ref), atol=1e-5)
    running = [k for k in mine.state_dict if "running_var" in k]
    assert running and all(torch.equal(bad.state_dict[k], mine.state_dict[k]) for k in running)
    assert bad.detail == {"scale": 10.0, "reference_models": 3}


def test_free_rider_is_a_noisy_copy_of_the_other_model() -> None:
    other = _honest("o", (0, 1, 2, 3, 4))
    copy = attacks.free_rider(other, np.random.default_rng(0), model_id="r", noise=0.1)
    assert copy.source == "o" and copy.classes == other.classes
    w, w0 = copy.state_dict["head.weight"], other.state_dict["head.weight"]
    assert not torch.equal(w, w0)
    assert float((w - w0).std() / w0.std()) == pytest.approx(0.1, rel=0.3)
