"""The main job's "Average" row: FedAvg of the pooled models of the meta-learner's spec."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from server.federation import average_of_pool
from server.pool import ModelPool
from server.validation import Validator

from .helpers import make_submission, tiny_spec


def _accept(pool: ModelPool, seed: int, arch: str = "conv4") -> str:
    sub = make_submission(f"owner-{seed:03d}", seed=seed, spec=tiny_spec(arch))
    checked = Validator(seen=pool.has_digest).validate(sub, node_id=seed)
    return pool.add(checked, node_id=seed, round_num=1)


def _state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def test_average_of_one_model_is_that_model(tmp_path: Path) -> None:
    with ModelPool(tmp_path) as pool:
        only = _accept(pool, 1)
        model, count = average_of_pool(pool, tiny_spec())
        stored = pool.load_tensors(only)
    assert model is not None and count == 1
    got = _state(model)
    assert set(got) == set(stored)
    for name, array in stored.items():
        np.testing.assert_array_equal(got[name], array, err_msg=name)


def test_average_of_two_models_is_their_elementwise_mean(tmp_path: Path) -> None:
    with ModelPool(tmp_path) as pool:
        a, b = _accept(pool, 1), _accept(pool, 2)
        _accept(pool, 3, arch="resnet10")  # another spec: left out of the average
        model, count = average_of_pool(pool, tiny_spec())
        ta, tb = pool.load_tensors(a), pool.load_tensors(b)
    assert model is not None and count == 2
    got = _state(model)
    floats = [name for name, array in ta.items() if array.dtype.kind == "f"]
    # the two owners' weights differ, so the mean is neither of them
    assert any(not np.array_equal(ta[n], tb[n]) for n in floats if n.endswith("weight"))
    for name in floats:
        np.testing.assert_allclose(got[name], (ta[name] + tb[name]) / 2, rtol=0, atol=1e-7)


def test_no_model_of_the_spec_gives_none(tmp_path: Path) -> None:
    with ModelPool(tmp_path) as pool:
        _accept(pool, 1, arch="resnet10")
        assert average_of_pool(pool, tiny_spec()) == (None, 0)
