"""The weight-norm study's rescaling: same function, other norms, clear errors."""

from __future__ import annotations

import pytest
import torch

from free_common.models import ModelSpec, build_model
from scripts.studies.weight_norm import conv_norms, rescale_conv_kernels

SPEC = ModelSpec("conv4", image_size=16, width=4, num_classes=3)


def test_rescaled_kernels_have_the_asked_norms_and_the_same_outputs() -> None:
    torch.manual_seed(0)
    model = build_model(SPEC, batch_stats=True).eval()
    wanted = {name: 0.5 * norm for name, norm in conv_norms(model).items()}
    rescaled = rescale_conv_kernels(model, wanted)
    assert conv_norms(rescaled) == pytest.approx(wanted)
    assert conv_norms(model) == pytest.approx({n: 2 * v for n, v in wanted.items()})  # untouched
    images = torch.rand(6, 1, 16, 16)
    with torch.no_grad():  # every kernel feeds a batch-statistics BN: scale-invariant (up to eps)
        assert torch.allclose(rescaled(images), model(images), atol=1e-3)
    heads = [n for n, p in model.named_parameters() if p.dim() != 4]
    for name in heads:  # heads and BN parameters keep their values
        assert torch.equal(
            dict(model.named_parameters())[name], dict(rescaled.named_parameters())[name]
        )


def test_a_smaller_kernel_norm_takes_larger_steps_on_the_same_gradient_direction() -> None:
    torch.manual_seed(0)
    model = build_model(SPEC, batch_stats=True)
    rescaled = rescale_conv_kernels(model, {n: 0.5 * v for n, v in conv_norms(model).items()})
    images, labels = torch.rand(6, 1, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2])
    grads = []
    for m in (model, rescaled):
        loss = torch.nn.functional.cross_entropy(m(images), labels)
        (grad,) = torch.autograd.grad(loss, [m.backbone[0][0].weight])
        grads.append(grad)
    assert torch.allclose(grads[1], 2 * grads[0], atol=1e-3)  # gradient scales as 1/c


@pytest.mark.parametrize(
    "norms",
    [{}, {"backbone.0.0.weight": 1.0}, "zero", {"head.weight": 1.0}],
)
def test_rescaling_refuses_norms_that_do_not_name_every_kernel_positively(norms: object) -> None:
    model = build_model(SPEC, batch_stats=True)
    if norms == "zero":
        norms = dict.fromkeys(conv_norms(model), 0.0)
    with pytest.raises(ValueError, match="need a positive norm for each kernel"):
        rescale_conv_kernels(model, norms)  # type: ignore[arg-type]
