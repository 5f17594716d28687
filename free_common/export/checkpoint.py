"""Rebuild the meta-learner from a FREE trainer checkpoint for export."""

from __future__ import annotations

from pathlib import Path

import torch

from free_common.config import FreeConfig
from free_common.export.onnx_export import ExportError
from free_common.free.meta_learner import learner_spec
from free_common.models import Classifier, build_model

__all__ = ["load_meta_learner"]


def load_meta_learner(path: str | Path) -> Classifier:
    """The meta-learner (batch-statistics BN, eval mode) saved in a FREE checkpoint.

    The checkpoint is a ``torch.save`` dict with ``config`` (``FreeConfig.to_dict()``) and
    ``learner`` (state dict), as written by ``server.free_training``.

    Raises:
        ExportError: the file is unreadable or lacks either entry, or the weights do not fit.
    """
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ExportError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(state, dict) or "learner" not in state or "config" not in state:
        raise ExportError(f"{path}: not a FREE checkpoint (needs 'config' and 'learner')")
    spec = learner_spec(FreeConfig.from_dict(state["config"]).meta_learner)
    model = build_model(spec, batch_stats=True)
    try:
        model.load_state_dict(state["learner"])
    except RuntimeError as err:
        raise ExportError(f"{path}: learner weights do not fit {spec.to_json()}: {err}") from err
    return model.eval()
