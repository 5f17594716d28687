"""The recovery bench's matched-fidelity comparison and headline."""

from __future__ import annotations

import pytest

from scripts.bench.recovery import matched_fidelity

FREE = {"steps": [1.0, 5.0], "seconds": [0.1, 0.3], "fidelity": [0.3, 0.6]}


def test_the_cheapest_scratch_budget_reaching_free_s_fidelity_sets_the_speed_up() -> None:
    scratch = {"steps": [5.0, 10.0, 20.0], "seconds": [0.3, 0.6, 1.2], "fidelity": [0.4, 0.6, 0.7]}
    out = matched_fidelity(FREE, scratch, 5)
    assert out["reached"] and out["scratch_steps"] == 10.0
    assert out["speedup"] == pytest.approx(0.6 / 0.3)
    assert out["free_fidelity"] == 0.6 and out["free_seconds"] == 0.3


def test_a_scratch_curve_that_never_reaches_free_gives_a_lower_bound() -> None:
    scratch = {"steps": [5.0, 10.0], "seconds": [0.3, 0.9], "fidelity": [0.4, 0.5]}
    out = matched_fidelity(FREE, scratch, 5)
    assert not out["reached"] and out["scratch_steps"] == 10.0
    assert out["speedup"] == pytest.approx(0.9 / 0.3)


def test_k_must_be_on_free_s_curve() -> None:
    with pytest.raises(ValueError):
        matched_fidelity(FREE, FREE, 3)
