"""The trust measurements and checks of ``free_common.free.trust`` (probes, recovery, verdicts)."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch

from free_common.config import ConfigError, ScreeningConfig
from free_common.data.base import ClassImages, DatasetError
from free_common.free.teachers import Teacher, teacher_from_state_dict
from free_common.free.trust.checks import (
    matched_correlation,
    pool_findings,
    standardised,
    teacher_findings,
    top_class_share,
)
from free_common.free.trust.fingerprint import (
    Fingerprint,
    measure_teacher,
    recovery_passes,
    weight_sketch,
)
from free_common.free.trust.probes import (
    TrustError,
    probe_domains,
    probe_images,
    teacher_logits,
)
from free_common.free.trust.recovery import Recovery, best_recovery, recover_from_probes
from free_common.run_config import RunConfig
from tests.unit.free.synthetic import random_teacher, tiny_spec

CFG = ScreeningConfig(probe_images=40)
_SKETCH_SLOT = itertools.count()
OK = Recovery(1.0, 0.99, 0.0)


def _fp(
    name: str,
    logits: torch.Tensor,
    *,
    keys: tuple[str, ...] | None = None,
    norm: float = 10.0,
    spec: str = "s",
    recovery: Recovery | None = OK,
    sketch: torch.Tensor | None = None,
) -> Fingerprint:
    keys = keys or tuple(f"{name}/{i}" for i in range(logits.shape[1]))
    if sketch is None:  # unrelated weights: orthogonal sketches
        sketch = torch.zeros(256)
        sketch[next(_SKETCH_SLOT) % 256] = 1.0
    return Fingerprint(name, spec, keys, logits.float(), norm, sketch, recovery, 0.0)


def _features(probes: int = 200, dims: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(probes, dims)))


def _classifier(features: torch.Tensor, seed: int, noise: float = 0.3) -> torch.Tensor:
    """Logits of a 'teacher' whose output i reads feature i (plus its own noise)."""
    g = np.random.default_rng(seed)
    base = features[:, :5] * 2
    return base + torch.from_numpy(g.normal(scale=noise, size=base.shape))


def test_probe_images_are_a_seeded_sample_in_unit_range(val_split: ClassImages) -> None:
    a = probe_images(val_split, 12, seed=3)
    assert a.shape == (12, 1, 16, 16) and a.dtype == torch.float32
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, probe_images(val_split, 12, seed=3))
    assert probe_images(val_split, 10_000).shape[0] == len(val_split.labels)
    with pytest.raises(TrustError):
        probe_images(val_split, 0)


def test_recovery_separates_a_trained_teacher_from_a_random_one(
    teachers: list[Teacher], val_split: ClassImages
) -> None:
    probes = probe_images(val_split, 40)
    trained = recover_from_probes(teachers[0], probes, steps=10, per_class=4, lr=0.5)
    random = recover_from_probes(
        random_teacher("r", tiny_spec(3, width=8)), probes, steps=10, per_class=4, lr=0.5
    )
    assert trained.accuracy == 1.0 and trained.confidence > random.confidence + 0.1
    assert random.confidence < 0.45
    with pytest.raises(TrustError):
        recover_from_probes(teachers[0], probes, steps=0, per_class=4, lr=0.5)


def test_with_several_probe_domains_the_best_domains_recovery_is_judged(
    teachers: list[Teacher], val_split: ClassImages
) -> None:
    """A teacher is pushed to its classes from its own domain's probes, not from blanks."""
    own = probe_images(val_split, 12)
    probes = torch.cat([torch.full_like(own, 0.5), own])  # domain 0: flat grey images
    domains = torch.tensor([0] * 12 + [1] * 12)
    teacher = teachers[0]

    def recover(images: torch.Tensor) -> Recovery:
        return recover_from_probes(teacher, images, steps=10, per_class=4, lr=0.5)

    def best(domain_index: torch.Tensor | None, images: torch.Tensor = probes) -> Recovery:
        passes = lambda r: recovery_passes(r, CFG)  # noqa: E731
        return best_recovery(
            teacher, images, domain_index, steps=10, per_class=4, lr=0.5, passes=passes
        )

    each = [recover(probes[domains == d]) for d in (0, 1)]
    rank = [(recovery_passes(r, CFG), r.confidence, r.accuracy) for r in each]
    winner = 1 if rank[1] > rank[0] else 0
    chosen = best(domains)
    assert chosen.domain == winner
    assert (chosen.accuracy, chosen.confidence) == (each[winner].accuracy, each[winner].confidence)
    # one domain, or none given: one recovery from every probe, no domain recorded
    alone = best(None, own)
    assert alone.domain == -1 and alone.confidence == recover(own).confidence
    fp = measure_teacher(teacher, probes, CFG, domains)
    assert fp.recovery is not None and fp.recovery.domain == chosen.domain


def test_measure_skips_recovery_when_logits_explode(
    teachers: list[Teacher], val_split: ClassImages
) -> None:
    probes = probe_images(val_split, 20)
    state = {
        k: v * 10 if v.is_floating_point() else v for k, v in teachers[0].model.state_dict().items()
    }
    scaled = teacher_from_state_dict("scaled", teachers[0].spec, state)
    fp = measure_teacher(scaled, probes, replace(CFG, max_logit=50.0))
    assert fp.recovery is None and fp.max_abs_logit > 50
    (finding,) = teacher_findings(fp, replace(CFG, max_logit=50.0))
    assert finding.check == "logit_range" and finding.exclude and "logits reach" in finding.reason
    honest = measure_teacher(teachers[0], probes, CFG)
    assert honest.recovery is not None and honest.logits.shape == (20, 3)
    assert torch.equal(honest.logits, teacher_logits(teachers[0], probes))


def test_fingerprint_state_round_trip(teachers: list[Teacher], val_split: ClassImages) -> None:
    fp = measure_teacher(teachers[1], probe_images(val_split, 8), CFG)
    again = Fingerprint.from_state(fp.to_state())
    assert again.recovery == fp.recovery and torch.equal(again.logits, fp.logits)
    assert (again.teacher_id, again.spec, again.class_keys) == (
        fp.teacher_id,
        fp.spec,
        fp.class_keys,
    )


def test_failed_recovery_excludes_with_both_figures() -> None:
    weak = _fp("w", _features()[:, :5], recovery=Recovery(0.4, 0.3, 0.0))
    (finding,) = teacher_findings(weak, CFG)
    assert finding.check == "recovery" and finding.exclude
    assert "accuracy 0.400" in finding.reason and "confidence 0.300" in finding.reason


def test_constant_output_is_the_mean_probability_of_the_favourite_class() -> None:
    spread = torch.eye(5).repeat(20, 1) * 4  # each class favoured by a fifth of the probes
    share, _ = top_class_share(spread)
    assert share == pytest.approx(0.2)
    constant = torch.zeros(100, 5)
    constant[:, 2] = 12.0
    share, label = top_class_share(constant)
    assert label == 2 and share > 0.99
    (finding,) = teacher_findings(_fp("c", constant), CFG)
    assert finding.check == "constant_output" and "class 2" in finding.reason
    assert teacher_findings(_fp("s", spread), CFG) == []


def test_matched_correlation_is_invariant_to_output_order() -> None:
    z = standardised(_classifier(_features(), 0))
    perm = [3, 0, 4, 1, 2]
    assert matched_correlation(z.T @ z[:, perm] / len(z)) == pytest.approx(1.0)
    other = standardised(_classifier(_features(seed=9), 1))
    assert matched_correlation(z.T @ other / len(z)) < 0.5


def test_outputs_alone_make_the_later_teacher_suspected_not_excluded() -> None:
    f = _features()
    original = _classifier(f, 0)
    noise = torch.randn(original.shape, generator=torch.Generator().manual_seed(0))
    copy = original[:, [2, 0, 1, 4, 3]] + 0.05 * noise.double()
    unrelated = _classifier(_features(seed=5), 1)
    found = pool_findings([_fp("a", original), _fp("x", unrelated), _fp("b", copy)], CFG)
    assert set(found) == {"b"}
    (finding,) = found["b"]
    assert finding.check == "near_duplicate" and finding.other == "a" and finding.value > 0.95
    assert not finding.exclude and "suspected" in finding.reason
    assert finding.limit == CFG.max_duplicate_correlation


def test_a_weight_copy_of_a_suspected_teacher_is_excluded() -> None:
    f = _features()
    original = _classifier(f, 0)
    twin = _classifier(f, 1)  # same classes, unrelated weights: suspected, kept
    shared = torch.nn.functional.normalize(torch.ones(256), dim=0)  # default sketches: 256
    fps = [_fp("a", original), _fp("b", twin, sketch=shared), _fp("c", twin, sketch=shared)]
    found = pool_findings(fps, CFG)
    assert [f.exclude for f in found["b"]] == [False]
    (copy,) = found["c"]
    assert copy.exclude and copy.other == "b" and copy.value == pytest.approx(1.0)
    assert copy.limit == CFG.max_weight_similarity and "suspected" not in copy.reason


def test_a_suspected_teacher_names_its_closest_output_match() -> None:
    f = _features()
    near = _classifier(f, 0, noise=0.6)
    nearer = _classifier(f, 1, noise=0.1)
    late = _classifier(f, 2, noise=0.1)
    found = pool_findings([_fp("near", near), _fp("nearer", nearer), _fp("late", late)], CFG)
    assert found["late"][0].other == "nearer" and not found["late"][0].exclude


def test_weight_sketch_tells_a_noisy_copy_from_an_independent_model(
    teachers: list[Teacher],
) -> None:
    g = torch.Generator().manual_seed(0)
    noisy = {
        k: v + 0.3 * v.std() * torch.randn(v.shape, generator=g) if v.numel() > 1 else v
        for k, v in teachers[0].model.state_dict().items()
    }
    copy = teacher_from_state_dict("copy", teachers[0].spec, noisy)
    sketches = [weight_sketch(t) for t in (teachers[0], copy, teachers[1])]
    assert all(s.shape == (1024,) and float(s.norm()) == pytest.approx(1.0) for s in sketches)
    assert float(sketches[0] @ sketches[1]) > 0.9
    assert abs(float(sketches[0] @ sketches[2])) < 0.3


def test_a_weight_copy_is_a_near_duplicate_even_with_other_outputs() -> None:
    shared = torch.nn.functional.normalize(torch.ones(64), dim=0)
    a = _fp("a", _classifier(_features(), 0), sketch=shared)
    b = _fp("b", _classifier(_features(seed=3), 1), sketch=shared)
    other_spec = _fp("c", _classifier(_features(seed=4), 2), sketch=shared, spec="other")
    found = pool_findings([a, b, other_spec], CFG)
    assert set(found) == {"b"}  # a weight sketch is compared within a spec only
    assert "weight similarity 1.000" in found["b"][0].reason


def test_weight_scale_needs_peers_then_flags_outliers_both_ways() -> None:
    logits = [_classifier(_features(seed=i), i) for i in range(6)]
    norms = [10.0, 11.0, 9.5, 10.2, 100.0, 4.0]
    fps = [_fp(f"t{i}", logits[i], norm=n) for i, n in enumerate(norms)]
    found = pool_findings(fps, CFG)
    assert set(found) == {"t4", "t5"}
    assert all(f.check == "weight_scale" for v in found.values() for f in v)
    assert pool_findings(fps[:4] + fps[4:5], replace(CFG, min_peers=5)) == {}
    other_spec = [replace(fp, spec="other") if fp.teacher_id == "t4" else fp for fp in fps]
    assert set(pool_findings(other_spec, CFG)) == {"t5"}  # alone in its spec: no peers


def _named(name: str, logits: torch.Tensor, names: list[str]) -> Fingerprint:
    return _fp(name, logits, keys=tuple(f"label:{n}" for n in names))


def test_label_agreement_flags_permuted_names_not_their_honest_peers() -> None:
    f = _features(dims=10)
    names = ["a", "b", "c", "d", "e"]
    honest = [_named(f"h{i}", _classifier(f, i, noise=1.0), names) for i in range(4)]
    shifted = _named("shift", _classifier(f, 8, noise=1.0)[:, [1, 2, 3, 4, 0]], names)
    swapped = _named("swap", _classifier(f, 9, noise=1.0)[:, [1, 0, 3, 2, 4]], names)
    found = pool_findings([*honest, shifted, swapped], CFG)
    assert set(found) == {"shift", "swap"}
    for finding in (*found["shift"], *found["swap"]):
        assert finding.check == "label_agreement" and finding.exclude
        assert finding.value < CFG.min_label_margin and "label:" in finding.reason


def test_label_agreement_flags_outputs_unrelated_to_the_claimed_names() -> None:
    f = _features(dims=10)
    names = ["a", "b", "c", "d", "e"]
    honest = [_named(f"h{i}", _classifier(f, i, noise=1.0), names) for i in range(4)]
    elsewhere = f[:, 5:10] * 2  # trained on other classes: its outputs read other features
    noise = torch.randn(elsewhere.shape, generator=torch.Generator().manual_seed(1)).double()
    false = _named("false", elsewhere + 0.3 * noise, names)
    found = pool_findings([*honest, false], CFG)
    assert set(found) == {"false"}
    (finding,) = found["false"]
    assert finding.check == "label_agreement" and "mean correlation" in finding.reason


def test_label_disagreement_with_too_few_pairs_is_only_suspected() -> None:
    f, g = _features(), _features(seed=7)
    a = _named("a", _classifier(f, 0), ["a", "b", "c", "d", "e"])
    swapped = torch.cat([f[:, [1, 0]], g[:, :3]], dim=1) * 2  # "a" and "b" read the wrong way
    b = _named("b", swapped, ["a", "b", "x", "y", "z"])
    found = pool_findings([a, b], replace(CFG, min_label_pairs=3))
    checks = [f for v in found.values() for f in v]
    assert checks and all(f.check == "label_agreement" and not f.exclude for f in checks)
    assert all("suspected" in f.reason for f in checks)


def test_private_names_never_pair() -> None:
    f = _features()
    fps = [_fp(f"t{i}", _classifier(f, i)[:, torch.randperm(5)]) for i in range(3)]
    assert not any(
        f.check == "label_agreement" for v in pool_findings(fps, CFG).values() for f in v
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_weight_ratio", 1.0),
        ("min_label_margin", -3.0),
        ("min_label_correlation", 1.5),
        ("max_top_class_share", 1.5),
        ("probe_images", 0),
        ("max_logit", 0.0),
        ("min_peers", 0),
        ("max_unit_correlation", 1.5),
    ],
)
def test_screening_config_refuses_out_of_range_values(field: str, value: float) -> None:
    with pytest.raises(ConfigError):
        ScreeningConfig(**{field: value})


def test_with_several_domains_constant_output_must_hold_on_every_domain() -> None:
    """A model of one domain may read every probe of another domain as one class."""
    constant = torch.zeros(100, 5)
    constant[:, 2] = 12.0
    # 98 probes of domain 0 read as class 2; the 2 of domain 1 as classes 0 and 1
    mixed = torch.cat([constant[:98], torch.eye(5)[:2] * 4])
    domains = torch.tensor([0] * 98 + [1] * 2)
    assert teacher_findings(_fp("m", mixed), CFG)  # judged on all probes: constant
    assert teacher_findings(_fp("m", mixed), CFG, domains) == []
    (finding,) = teacher_findings(_fp("c", constant), CFG, domains)
    assert finding.check == "constant_output" and "of each domain" in finding.reason


def test_probe_domains_follow_the_probe_rows() -> None:
    labels = np.repeat(np.arange(4), 5)
    images = (labels[:, None, None, None] * np.ones((1, 1, 4, 4))).astype(np.uint8)
    one = ClassImages("one", images, labels, ("a", "b", "c", "d"))
    assert probe_domains(one, 8) is None
    two = ClassImages("two", images, labels, ("a", "b", "c", "d"), ("g", "g", "i", "i"))
    probes, domains = probe_images(two, 8, seed=3), probe_domains(two, 8, seed=3)
    assert domains is not None and domains.shape == (8,)
    # images carry their class index as pixel value: domain = class >= 2
    assert torch.equal(domains, (probes[:, 0, 0, 0] * 255).round().long().ge(2).long())
    assert two.subset([3, 0]).domains == ("i", "g")
    with pytest.raises(DatasetError, match="class domains"):
        ClassImages("bad", images, labels, ("a", "b", "c", "d"), ("g",))


def test_the_default_logit_limit_sits_between_honest_icon_resnets_and_scaled_replacements() -> None:
    """1,165: an honest icon ResNet-18; 5.15e5: the bench's smallest scaled replacement."""
    app = RunConfig({}).free_config().screening
    logits = _classifier(_features(), 0)
    weak = _fp("weak", logits * (1165 / float(logits.abs().max())))
    assert teacher_findings(weak, app) == []
    assert [f.check for f in teacher_findings(weak, replace(app, max_logit=1000.0))] == [
        "logit_range"
    ]
    scaled = _fp("scaled", logits * (5.15e5 / float(logits.abs().max())))
    assert [f.check for f in teacher_findings(scaled, app)] == ["logit_range"]
