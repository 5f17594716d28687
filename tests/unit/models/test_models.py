import pytest
import torch
from torch.func import functional_call

from free_common.models import (
    ARCHITECTURES,
    GeneratorSpec,
    ModelSpec,
    build_generator,
    build_model,
    count_macs,
    count_parameters,
)

TINY = {"conv4": 4, "resnet10": 2, "resnet18": 2}


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_architecture_gives_finite_logits_of_the_right_shape(arch: str, channels: int):
    spec = ModelSpec(
        arch,
        in_channels=channels,
        image_size=16,
        width=TINY[arch],
        mean=(0.5,) * channels,
        std=(0.25,) * channels,
    )
    model = build_model(spec)
    logits = model(torch.rand(3, channels, 16, 16))
    assert logits.shape == (3, 5)
    assert torch.isfinite(logits).all()
    assert model.forward_features(torch.rand(2, channels, 16, 16)).shape == (2, model.num_features)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_reset_classifier_changes_outputs_and_spec(arch: str):
    model = build_model(ModelSpec(arch, image_size=16, width=TINY[arch]))
    model.reset_classifier(7)
    assert model(torch.rand(2, 1, 16, 16)).shape == (2, 7)
    assert model.spec.num_classes == 7 and model.num_classes == 7


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_functional_call_matches_forward(arch: str):
    model = build_model(ModelSpec(arch, image_size=16, width=TINY[arch]), batch_stats=True)
    x = torch.rand(4, 1, 16, 16)
    params = {k: v * 1.0 for k, v in model.named_parameters()}
    torch.testing.assert_close(functional_call(model, params, (x,)), model(x))


def test_normalisation_is_inside_the_model_and_not_in_the_weights():
    spec = ModelSpec("conv4", image_size=16, width=4, mean=(0.2,), std=(0.1,))
    model = build_model(spec)
    assert "pixel_mean" not in model.state_dict() and "pixel_std" not in model.state_dict()
    model.eval()
    x = torch.rand(2, 1, 16, 16)
    expected = model.forward_head(model.backbone((x - 0.2) / 0.1))
    torch.testing.assert_close(model(x), expected)


def test_batch_stats_models_have_no_running_buffers_and_use_batch_statistics():
    model = build_model(ModelSpec("conv4", image_size=16, width=4), batch_stats=True).eval()
    assert not any("running" in k for k in model.state_dict())
    a, b = torch.rand(4, 1, 16, 16), torch.rand(4, 1, 16, 16)
    # Eval mode still normalises with the batch: a row's output depends on its batch mates.
    assert not torch.allclose(model(torch.cat([a, b]))[:4], model(a))


def test_teacher_weights_load_into_a_batch_stats_model():
    spec = ModelSpec("resnet10", image_size=16, width=2)
    teacher = build_model(spec)
    learner = build_model(spec, batch_stats=True)
    missing, unexpected = learner.load_state_dict(teacher.state_dict(), strict=False)
    assert not missing
    assert all("running" in k or "num_batches" in k for k in unexpected)


def test_costs_grow_with_depth():
    specs = [ModelSpec(a, width=16) for a in ARCHITECTURES]
    macs = [count_macs(build_model(s)) for s in specs]
    params = [count_parameters(build_model(s)) for s in specs]
    assert macs == sorted(macs) and params == sorted(params)
    # Conv4-16 at 32x32 grey: 16*9*32*32 + 3 * 16*16*9*(16^2, 8^2, 4^2) + 16*4*5
    expected = 16 * 9 * 1024 + 16 * 16 * 9 * (256 + 64 + 16) + 64 * 5
    assert macs[0] == expected


@pytest.mark.parametrize(("size", "channels"), [(32, 1), (84, 3), (30, 1)])
def test_generator_outputs_images_in_unit_range(size: int, channels: int):
    gen = build_generator(
        GeneratorSpec(latent_dim=8, width=4, out_channels=channels, image_size=size)
    )
    images = gen(torch.randn(3, 8))
    assert images.shape == (3, channels, size, size)
    assert images.min() >= 0 and images.max() <= 1


def test_generator_spec_rejects_bad_sizes():
    with pytest.raises(ValueError, match="image_size"):
        GeneratorSpec(image_size=4)
    with pytest.raises(ValueError, match="width"):
        GeneratorSpec(width=0)
