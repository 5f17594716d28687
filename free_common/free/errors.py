"""Errors of the FREE training loop."""

from __future__ import annotations

import math

from torch import Tensor

__all__ = ["NonFiniteLossError", "check_finite"]


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or Inf; names the term (and, from the trainer, the iteration).

    Attributes:
        term: the loss term, e.g. ``"inversion/ce"`` or ``"meta_learner/kd"``.
        iteration: the outer iteration, when known.
    """

    def __init__(self, term: str, value: float, iteration: int | None = None) -> None:
        self.term, self.value, self.iteration = term, value, iteration
        where = f" at iteration {iteration}" if iteration is not None else ""
        super().__init__(f"loss term {term!r} is {value}{where}; training stopped")

    def at_iteration(self, iteration: int) -> NonFiniteLossError:
        """The same error, naming ``iteration``."""
        return NonFiniteLossError(self.term, self.value, iteration)


def check_finite(value: Tensor | float, term: str) -> float:
    """``float(value)``, or :class:`NonFiniteLossError` naming ``term`` if it is NaN/Inf."""
    number = float(value.detach()) if isinstance(value, Tensor) else float(value)
    if not math.isfinite(number):
        raise NonFiniteLossError(term, number)
    return number
