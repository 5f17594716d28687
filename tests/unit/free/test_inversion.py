from dataclasses import replace

import torch

from free_common.config import FreeConfig, InversionConfig
from free_common.free.inversion import MetaGeneratorInverter, target_labels
from free_common.free.meta_learner import build_meta_learner
from free_common.free.teachers import InMemoryTeachers, Teacher, TeacherCache
from tests.unit.free.synthetic import random_teacher, tiny_spec

CFG = FreeConfig.preset("test").inversion


def _inverter(config: InversionConfig = CFG) -> MetaGeneratorInverter:
    return MetaGeneratorInverter(config, torch.device("cpu"))


def test_recovered_tasks_have_targets_and_quality(teachers: list[Teacher]) -> None:
    out = _inverter().invert(teachers[:2], torch.Generator().manual_seed(0))
    assert [r.teacher_id for r in out] == ["t0", "t1"]
    for r in out:
        assert r.images.shape == (3 * CFG.images_per_class, 1, 16, 16)
        assert r.images.min() >= 0 and r.images.max() <= 1 and not r.images.requires_grad
        assert torch.equal(r.targets, target_labels(3, CFG.images_per_class, torch.device("cpu")))
        assert 0 <= r.accuracy <= 1 and 0 < r.confidence <= 1 and r.steps == CFG.inner_steps


def test_outer_optimizer_keeps_state_across_iterations(teachers: list[Teacher]) -> None:
    inv = _inverter()
    optimizer = inv.optimizer
    rng = torch.Generator().manual_seed(0)
    inv.invert(teachers[:1], rng)
    first = {k: v["exp_avg"].clone() for k, v in enumerate(optimizer.state.values())}
    inv.invert(teachers[:1], rng)
    assert inv.optimizer is optimizer
    steps = {int(s["step"]) for s in optimizer.state.values()}
    assert steps == {2}
    second = [s["exp_avg"] for s in optimizer.state.values()]
    assert any(not torch.equal(first[i], second[i]) for i in range(len(second)))


def test_meta_gradient_is_sum_of_last_step_gradients(teachers: list[Teacher]) -> None:
    """theta.grad after the teachers' adaptations = sum of each teacher's last-step gradient."""
    inv = _inverter()
    grads = []
    for t in teachers[:2]:
        inv.generator.zero_grad(set_to_none=True)
        inv._adapt(t, torch.Generator().manual_seed(5), None, 0.0)
        grads.append([p.grad.clone() for p in inv.generator.parameters()])
    inv.generator.zero_grad(set_to_none=True)
    for t in teachers[:2]:
        inv._adapt(t, torch.Generator().manual_seed(5), None, 0.0)
    for p, g0, g1 in zip(inv.generator.parameters(), *grads, strict=True):
        assert torch.allclose(p.grad, g0 + g1, atol=1e-6)


def test_generator_moves_and_teachers_stay_frozen(teachers: list[Teacher]) -> None:
    inv = _inverter()
    before = [p.clone() for p in inv.generator.parameters()]
    teacher_before = [p.clone() for p in teachers[0].model.parameters()]
    inv.invert(teachers[:1], torch.Generator().manual_seed(0))
    after = list(inv.generator.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    frozen = list(teachers[0].model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, frozen, strict=True))


def test_mixed_architectures_sizes_and_channels_each_teacher_its_own_weights() -> None:
    specs = [
        tiny_spec(3, arch="conv4", size=16, channels=1),
        tiny_spec(3, arch="resnet10", size=32, channels=3),
        tiny_spec(3, arch="resnet10", size=32, channels=3),
    ]
    pool = [random_teacher(f"m{i}", s, seed=i) for i, s in enumerate(specs)]
    cache = TeacherCache(InMemoryTeachers(pool), capacity=3, device=torch.device("cpu"))
    loaded = cache.get_many(["m0", "m1", "m2"])
    assert len({id(t.model) for t in loaded}) == 3
    w1 = dict(loaded[1].model.named_parameters())
    w2 = dict(loaded[2].model.named_parameters())
    assert any(not torch.equal(w1[k], w2[k]) for k in w1)  # no aliasing (published 6.7)
    learner = build_meta_learner(FreeConfig.preset("test").meta_learner)
    out = _inverter(replace(CFG, adv_weight=1.0)).invert(
        loaded, torch.Generator().manual_seed(0), learner=learner, adv_weight=1.0
    )
    assert [r.teacher_id for r in out] == ["m0", "m1", "m2"]
    assert all(r.images.shape[1:] == (1, 16, 16) for r in out)


def test_adversarial_term_leaves_learner_untouched(teachers: list[Teacher]) -> None:
    learner = build_meta_learner(FreeConfig.preset("test").meta_learner)
    before = [p.clone() for p in learner.parameters()]
    _inverter().invert(teachers[:1], torch.Generator(), learner=learner, adv_weight=1.0)
    assert all(p.grad is None for p in learner.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, learner.parameters(), strict=True))


def test_state_dict_round_trip(teachers: list[Teacher]) -> None:
    a = _inverter()
    a.invert(teachers[:1], torch.Generator().manual_seed(0))
    b = _inverter()
    b.load_state_dict(a.state_dict())
    for p, q in zip(a.generator.parameters(), b.generator.parameters(), strict=True):
        assert torch.equal(p, q)
    assert b.optimizer.state_dict()["state"].keys() == a.optimizer.state_dict()["state"].keys()


def test_batched_path_matches_sequential_path(teachers: list[Teacher]) -> None:
    """Stacked clones under vmap = one clone per teacher (no augmentation randomness)."""
    base = replace(CFG, crop_padding=0)
    results = {}
    for batched in (False, True):
        torch.manual_seed(0)
        inv = _inverter(replace(base, batched=batched))
        out = inv.invert(teachers, torch.Generator().manual_seed(4))
        results[batched] = (out, [p.grad.clone() for p in inv.generator.parameters()], inv)
    (seq, g_seq, a), (bat, g_bat, b) = results[False], results[True]
    for r, s in zip(seq, bat, strict=True):
        assert r.teacher_id == s.teacher_id
        assert torch.allclose(r.images, s.images, atol=1e-5)
    for x, y in zip(g_seq, g_bat, strict=True):
        assert torch.allclose(x, y, atol=1e-5, rtol=1e-4)
    for p, q in zip(a.generator.parameters(), b.generator.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)
