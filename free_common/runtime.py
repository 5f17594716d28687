"""Seeding, device choice and RNG state capture (for bitwise-exact resume)."""

from __future__ import annotations

import platform
import random
from typing import Any

import numpy as np
import torch

__all__ = ["get_rng_state", "host_record", "pick_device", "seed_everything", "set_rng_state"]


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global RNG and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the global RNG is the point)
    torch.manual_seed(seed)


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def host_record(device: torch.device) -> dict[str, Any]:
    """What a benchmark report records of the machine it ran on.

    Returns:
        ``device`` (its type and the processor, e.g. ``"cpu (x86_64)"``), ``threads``
        (torch's intra-op threads) and ``torch`` (its version).
    """
    return {
        "device": f"{device.type} ({platform.processor() or platform.machine()})",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def get_rng_state() -> dict[str, Any]:
    """The global RNG states of python, numpy, torch CPU and every CUDA device.

    Returns:
        A dict of tensors, ints and tuples only (loadable with ``torch.load(...,
        weights_only=True)``).
    """
    np_state = np.random.get_state(legacy=True)  # noqa: NPY002
    assert isinstance(np_state, tuple)
    kind, keys, pos, has_gauss, cached = np_state
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`get_rng_state` (CUDA states are restored when CUDA is present)."""
    random.setstate(_as_python_state(state["python"]))
    np_state = state["numpy"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(  # noqa: NPY002
        (
            np_state["kind"],
            keys,
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_python_state(value: Any) -> tuple[Any, ...]:
    """``random.setstate`` needs tuples; a serialised state may hold lists."""
    version, internal, gauss = value
    return (version, tuple(internal), gauss)
