import pytest

from free_common.config import PRESETS, ConfigError, FreeConfig


@pytest.mark.parametrize("name", PRESETS)
def test_presets_are_valid_and_round_trip(name: str) -> None:
    config = FreeConfig.preset(name)
    assert FreeConfig.from_dict(config.to_dict()) == config


def test_paper_preset_has_published_hyperparameters() -> None:
    c = FreeConfig.preset("paper")
    assert (c.iterations, c.teachers_per_iteration) == (999, 4)
    assert (c.inversion.inner_steps, c.inversion.images_per_class) == (5, 20)
    assert (c.inversion.latent_dim, c.inversion.generator_width) == (256, 64)
    assert c.inversion.betas == (0.5, 0.999) and c.inversion.generator_lr == 1e-3
    assert (c.inversion.adv_weight, c.inversion.bn_weight) == (1.0, 0.0)
    assert c.meta_learner.inner_optimizer == "adam" and c.meta_learner.inner_lr == 1e-3
    assert (c.replay.meta_batch, c.replay.patience, c.replay.inner_steps) == (10, 10, 5)
    assert c.replay.max_meta_batches == 0 and not c.replay.first_order
    assert c.memory.max_per_class == 400 and c.eval.test_tasks == 600
    assert not c.inversion.horizontal_flip


def test_run_config_overrides_kebab_case_keys() -> None:
    config = FreeConfig.from_run_config(
        {
            "preset": "test",
            "num-clients": 10,  # another component's key: ignored
            "free.iterations": 7,
            "free.inversion.inner-steps": 3,
            "free.meta-learner.alignment": False,
            "free.eval.shots": "1,5",
            "free.inversion.adv-weight": 0,
        }
    )
    assert config.iterations == 7 and config.inversion.inner_steps == 3
    assert not config.meta_learner.alignment and config.eval.shots == (1, 5)
    assert config.inversion.adv_weight == 0.0 and config.seed == FreeConfig.preset("test").seed


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("free.iterationz", 3, "unknown"),
        ("free.inversion.nope", 3, "unknown"),
        ("free.iterations", "many", "integer"),
        ("free.iterations", 0, "iterations"),
        ("free.meta-learner.alignment", 1, "boolean"),
        ("free.meta-learner.inner-optimizer", "rmsprop", "inner_optimizer"),
        ("free.eval.shots", "1,x", "parse"),
    ],
)
def test_bad_run_config_raises(key: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        FreeConfig.from_run_config({"free.preset": "paper-cpu", key: value})


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="preset"):
        FreeConfig.preset("huge")


def test_cpu_preset_keeps_the_published_alignment_step() -> None:
    """SGD inner steps won on the Conv4 pool but lost in the main job (alignment study,
    scripts/studies/alignment.md), so the cpu preset keeps the published step until the mixed
    pool is measured."""
    paper = FreeConfig.preset("paper").meta_learner
    cpu = FreeConfig.preset("paper-cpu").meta_learner
    assert (paper.inner_optimizer, paper.inner_lr, paper.reptile_scale) == ("adam", 1e-3, 67.0)
    assert cpu == paper
