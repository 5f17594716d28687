"""Small real submissions for federation tests (tiny widths, CPU)."""

from __future__ import annotations

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.local_training import LocalTrainingResult
from client.owner import build_submission
from free_common.models import ModelSpec, build_model
from free_common.submission import Submission, demo_private_key

SECRET = "test-secret"


def tiny_spec(arch: str = "conv4", width: int = 4, num_classes: int = 5) -> ModelSpec:
    return ModelSpec(arch=arch, width=width, num_classes=num_classes, image_size=16)


def make_submission(
    owner: str = "owner-000",
    *,
    seed: int = 0,
    spec: ModelSpec | None = None,
    key: Ed25519PrivateKey | None = None,
    signed: bool = True,
    label_names: tuple[str, ...] = (),
) -> Submission:
    spec = spec or tiny_spec()
    torch.manual_seed(seed)
    model = build_model(spec)
    with torch.no_grad():  # make running stats non-trivial but sane
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    result = LocalTrainingResult(
        state_dict={k: v.clone() for k, v in model.state_dict().items()},
        spec=spec,
        holdout_accuracy=0.8,
        train_accuracy=0.9,
        best_epoch=3,
        epochs=5,
        num_examples=80,
    )
    if key is None and signed:
        key = demo_private_key(SECRET, owner)
    return build_submission(
        result,
        owner_id=owner,
        private_key=key,
        label_names=label_names,
        label_kind="shared" if label_names else "private",
        num_holdout_examples=20,
    )


def copy_tensors(sub: Submission) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in sub.tensors.items()}
