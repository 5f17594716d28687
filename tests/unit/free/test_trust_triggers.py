"""The trigger scan of ``free_common.free.trust.triggers`` on hand-made networks."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import Tensor, nn

from free_common.config import ConfigError, FreeConfig, ScreeningConfig
from free_common.free.screening import screen_teacher
from free_common.free.teachers import Teacher
from free_common.free.trust import fingerprint, triggers
from free_common.free.trust.checks import teacher_findings
from free_common.free.trust.fingerprint import Fingerprint, scan_domain
from free_common.free.trust.probes import TrustError
from free_common.free.trust.recovery import Recovery
from free_common.free.trust.triggers import TriggerScan, scan_triggers
from tests.unit.free.synthetic import random_teacher, tiny_spec

TARGET = 2


class _Shortcut(nn.Module):
    """Class 0 needs a bright image, class 1 is the rest, class 2 fires on a bright 2x2
    corner: a trigger of 4 pixels, where class 0 needs half the image."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, images: Tensor) -> Tensor:
        brightness = images[:, 0].mean(dim=(1, 2))  # (B,)
        corner = images[:, 0, -2:, -2:].mean(dim=(1, 2))  # (B,)
        trigger = 8 * corner
        return torch.stack([self.scale * brightness, torch.full_like(corner, 5.0), trigger], 1)


def _shortcut_teacher() -> Teacher:
    return Teacher("shortcut", tiny_spec(3), _Shortcut(), ("a", "b", "c"))


def _probes(count: int = 64) -> Tensor:
    return torch.rand(count, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 0.5


def test_the_shortcut_class_is_reached_through_the_smallest_mask() -> None:
    scan = scan_triggers(
        _shortcut_teacher(), _probes(), steps=150, batch=8, lr=0.1, mask_weight=4.0
    )
    assert scan.flip_rates[TARGET] >= 0.9
    assert scan.shortcut(0.9) == TARGET
    assert scan.smallest(0.9) == scan.patch(TARGET)
    assert scan.mask_shares[TARGET] < 0.05  # a 2x2 corner is 1.6% of a 16x16 image
    assert scan.concentrations[TARGET] > 0.2  # gathered near the corner (uniform: 9/256)


def test_scan_shapes_ranges_and_determinism() -> None:
    teacher = random_teacher("r", tiny_spec(3), seed=0)
    a = scan_triggers(teacher, _probes(), steps=3, batch=4, lr=0.1, mask_weight=1.0, seed=5)
    b = scan_triggers(teacher, _probes(), steps=3, batch=4, lr=0.1, mask_weight=1.0, seed=5)
    assert len(a.mask_shares) == len(a.flip_rates) == len(a.concentrations) == 3
    assert all(0 <= s <= 1 for s in a.mask_shares) and all(0 <= r <= 1 for r in a.flip_rates)
    assert all(0 < c <= 1 + 1e-6 for c in a.concentrations)
    assert a == replace(b, seconds=a.seconds)
    assert a.seconds >= 0


def test_the_patch_counts_only_classes_that_flip_and_grows_with_scatter() -> None:
    scan = TriggerScan((0.01, 0.2, 0.05), (0.5, 1.0, 0.95), 0.0, (1.0, 1.0, 0.5))
    assert scan.patch(2) == pytest.approx(0.1)  # 5% of the pixels, half of it in one window
    assert scan.shortcut(0.9) == 2 and scan.smallest(0.9) == pytest.approx(0.1)
    assert scan.shortcut(0.99) == 1 and scan.smallest(0.99) == pytest.approx(0.2)
    assert TriggerScan((0.01,), (0.1,), 0.0, (1.0,)).shortcut(0.9) is None
    assert TriggerScan((0.01,), (0.1,), 0.0, (1.0,)).smallest(0.9) == float("inf")


def test_only_the_classes_that_look_like_shortcuts_are_refined() -> None:
    settings = {"steps": 30, "batch": 8, "lr": 0.1, "mask_weight": 4.0, "min_flip": 0.9}
    plain = scan_triggers(_shortcut_teacher(), _probes(), **settings)
    assert plain.refined == () and plain.flip_rates[TARGET] >= 0.9
    refined = scan_triggers(
        _shortcut_teacher(), _probes(), refine_steps=100, refine_below=1.0, **settings
    )
    reached = tuple(k for k in range(3) if plain.flip_rates[k] >= 0.9)
    assert TARGET in reached and refined.refined == reached
    for k in set(range(3)) - set(reached):  # the others keep their first judgement
        assert refined.mask_shares[k] == plain.mask_shares[k]
        assert refined.flip_rates[k] == plain.flip_rates[k]
    assert refined.patch(TARGET) < plain.patch(TARGET) / 2  # settles onto the 2x2 corner
    below_none = scan_triggers(
        _shortcut_teacher(), _probes(), refine_steps=100, refine_below=0.0, **settings
    )
    assert below_none == replace(plain, seconds=below_none.seconds)


def test_the_scan_runs_on_the_domain_of_the_teachers_own_colour() -> None:
    grey = torch.rand(4, 1, 8, 8).expand(4, 3, 8, 8)  # a one-channel domain shown as RGB
    colour = torch.rand(4, 3, 8, 8)
    probes = torch.cat([grey, colour])
    domains = torch.tensor([0] * 4 + [1] * 4)
    # whatever domain the recovery kept, a grey teacher is scanned on grey probes, and so on
    assert [scan_domain(1, probes, domains, r) for r in (0, 1)] == [0, 0]
    assert [scan_domain(3, probes, domains, r) for r in (0, 1)] == [1, 1]
    both_grey = torch.cat([grey, grey.flip(0)])
    assert [scan_domain(1, both_grey, domains, r) for r in (0, 1)] == [0, 1]  # undecided
    assert [scan_domain(3, both_grey, domains, r) for r in (0, 1)] == [0, 1]  # none matches
    assert scan_domain(1, probes, None, -1) == -1  # one domain: every probe


@pytest.mark.parametrize(("channels", "scanned"), [(3, "colour"), (1, "grey")])
def test_measure_teacher_scans_the_probes_of_the_teachers_own_colour(
    monkeypatch: pytest.MonkeyPatch, channels: int, scanned: str
) -> None:
    """Wherever the recovery started, the scan gets only the probes of the teacher's colour."""
    grey = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(2)).expand(6, 3, 16, 16)
    colour = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    probes, domains = torch.cat([grey, colour]), torch.tensor([0] * 6 + [1] * 6)
    wrong = 0 if scanned == "colour" else 1  # the recovery kept the other domain
    scanned_probes: list[Tensor] = []

    def fake_scan(_: Teacher, own: Tensor, __: ScreeningConfig) -> TriggerScan:
        scanned_probes.append(own)
        return TriggerScan((0.5,) * 3, (0.0,) * 3, 0.0, (0.1,) * 3)

    monkeypatch.setattr(fingerprint, "best_recovery", lambda *_, **__: Recovery(1.0, 1.0, 0, wrong))
    monkeypatch.setattr(fingerprint, "screening_scan", fake_scan)
    teacher = random_teacher("r", tiny_spec(3, channels=channels), seed=0)
    found = fingerprint.measure_teacher(teacher, probes, SCAN, domains)
    assert found.recovery is not None and found.recovery.domain == wrong
    assert len(scanned_probes) == 1 and found.trigger is not None
    torch.testing.assert_close(scanned_probes[0], colour if scanned == "colour" else grey)
    scanned_probes.clear()  # one domain: every probe
    fingerprint.measure_teacher(teacher, probes, SCAN)
    torch.testing.assert_close(scanned_probes[0], probes)


def test_a_scan_below_the_limit_is_repeated_and_the_least_suspicious_one_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    draws = {  # seed -> the patch that draw finds for class 0
        0: TriggerScan((0.01,), (1.0,), 1.0, (0.5,)),  # 2%: below the limit
        1: TriggerScan((0.02,), (1.0,), 2.0, (0.5,)),  # 4%: above
        2: TriggerScan((0.005,), (1.0,), 4.0, (0.5,)),
    }
    seeds: list[int] = []

    def fake_scan(*_: object, seed: int, **__: object) -> TriggerScan:
        seeds.append(seed)
        return draws[seed]

    monkeypatch.setattr(triggers, "scan_triggers", fake_scan)
    teacher = random_teacher("r", tiny_spec(3), seed=0)
    kept = triggers.confirmed_scan(teacher, _probes(), confirmations=2, limit=0.03, min_flip=0.9)
    assert seeds == [0, 1]  # the second draw is above the limit: no third
    assert kept.smallest(0.9) == pytest.approx(0.04) and kept.scans == 2 and kept.seconds == 3.0
    draws[1] = TriggerScan((0.012,), (1.0,), 2.0, (0.5,))  # every draw below: excluded
    seeds.clear()
    kept = triggers.confirmed_scan(teacher, _probes(), confirmations=2, limit=0.03, min_flip=0.9)
    assert seeds == [0, 1, 2] and kept.scans == 3 and kept.smallest(0.9) == pytest.approx(0.024)
    seeds.clear()
    once = triggers.confirmed_scan(teacher, _probes(), confirmations=0, limit=0.03, min_flip=0.9)
    assert seeds == [0] and once.scans == 1


def test_the_shortcut_network_is_found_in_every_confirming_scan() -> None:
    kept = triggers.confirmed_scan(
        _shortcut_teacher(),
        _probes(),
        confirmations=1,
        limit=0.1,
        min_flip=0.9,
        steps=150,
        batch=8,
        lr=0.1,
        mask_weight=4.0,
    )
    assert kept.scans == 2 and kept.shortcut(0.9) == TARGET and kept.smallest(0.9) < 0.1
    with pytest.raises(TrustError, match="confirmations"):
        triggers.confirmed_scan(
            _shortcut_teacher(), _probes(), confirmations=-1, limit=0.1, min_flip=0.9
        )


def test_negative_refinement_is_refused() -> None:
    teacher = random_teacher("r", tiny_spec(3), seed=0)
    with pytest.raises(TrustError, match="refine_steps"):
        scan_triggers(
            teacher, _probes(), steps=3, batch=4, lr=0.1, mask_weight=1.0, refine_steps=-1
        )


@pytest.mark.parametrize(
    ("steps", "batch", "lr", "weight", "count"),
    [
        (0, 4, 0.1, 1.0, 8),
        (3, 0, 0.1, 1.0, 8),
        (3, 4, 0.0, 1.0, 8),
        (3, 4, 0.1, -1.0, 8),
        (3, 4, 0.1, 1.0, 1),
    ],
)
def test_bad_settings_are_refused(
    steps: int, batch: int, lr: float, weight: float, count: int
) -> None:
    teacher = random_teacher("r", tiny_spec(3), seed=0)
    with pytest.raises(TrustError, match="trigger scan needs"):
        scan_triggers(teacher, _probes(count), steps=steps, batch=batch, lr=lr, mask_weight=weight)


# ---------------------------------------------------------------- the screening check

SCAN = ScreeningConfig(probe_images=64, min_accuracy=0.0, min_confidence=0.0, trigger_steps=150)


def _fingerprint(trigger: TriggerScan | None) -> Fingerprint:
    logits = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    recovery = Recovery(1.0, 0.99, 0.0)
    return Fingerprint(
        "t", "s", ("t/0", "t/1", "t/2"), logits, 1.0, torch.zeros(8), recovery, 0.0, trigger
    )


_SPREAD = (1.0, 0.5, 1.0)


@pytest.mark.parametrize(
    ("scan", "excluded"),
    [
        (TriggerScan((0.2, 0.005, 0.3), (1.0, 0.95, 1.0), 0.0, _SPREAD), True),  # small, flips
        (TriggerScan((0.2, 0.005, 0.3), (1.0, 0.5, 1.0), 0.0, _SPREAD), False),  # flips too few
        (TriggerScan((0.2, 0.03, 0.3), (1.0, 1.0, 1.0), 0.0, _SPREAD), False),  # scattered
        (None, False),  # not scanned
    ],
)
def test_the_trigger_check_excludes_a_tiny_patch_that_flips_held_out_probes(
    scan: TriggerScan | None, excluded: bool
) -> None:
    found = [
        f for f in teacher_findings(_fingerprint(scan), ScreeningConfig()) if f.check == "trigger"
    ]
    assert bool(found) == excluded
    if excluded:
        assert found[0].exclude and found[0].value == pytest.approx(0.01)
        assert "class 1" in found[0].reason and "0.50% of the pixels, 50% of it" in found[0].reason


def test_screening_excludes_the_shortcut_network_for_its_trigger() -> None:
    result = screen_teacher(_shortcut_teacher(), SCAN, _probes(), max_classes=5)
    assert result.fingerprint is not None and result.fingerprint.trigger is not None
    assert not result.accepted and "backdoor trigger" in result.reason
    assert [f.check for f in result.findings] == ["trigger"]
    off = screen_teacher(
        _shortcut_teacher(), replace(SCAN, trigger_steps=0), _probes(), max_classes=5
    )
    assert off.accepted and off.fingerprint is not None and off.fingerprint.trigger is None


def test_the_scan_survives_a_checkpoint_and_old_states_read_as_unscanned() -> None:
    fp = _fingerprint(TriggerScan((0.1, 0.2, 0.3), (1.0, 0.5, 0.0), 1.5, (0.2, 0.3, 0.4)))
    again = Fingerprint.from_state(fp.to_state())
    assert again.trigger == fp.trigger
    old = fp.to_state()
    del old["trigger"]
    assert Fingerprint.from_state(old).trigger is None
    refined = _fingerprint(TriggerScan((0.1,), (1.0,), 1.5, (0.2,), (0,)))
    assert Fingerprint.from_state(refined.to_state()).trigger == refined.trigger
    unrefined = refined.to_state()
    del unrefined["trigger"]["refined"]  # stored before refinement
    assert Fingerprint.from_state(unrefined).trigger == replace(refined.trigger, refined=())
    confirmed = _fingerprint(TriggerScan((0.1,), (1.0,), 1.5, (0.2,), (), 3))
    state = confirmed.to_state()
    assert Fingerprint.from_state(state).trigger == confirmed.trigger
    del state["trigger"]["scans"]  # stored before confirmations: one scan
    assert Fingerprint.from_state(state).trigger == replace(confirmed.trigger, scans=1)


def test_config_keys_name_the_scan_only_when_it_runs() -> None:
    on = FreeConfig.preset("xkd-cpu")
    assert on.screening.trigger_steps > 0
    assert on.to_dict()["screening"]["trigger_steps"] == on.screening.trigger_steps
    assert FreeConfig.from_dict(on.to_dict()) == on
    off = replace(on, screening=replace(on.screening, trigger_steps=0))
    assert not any("trigger" in k for k in off.to_dict()["screening"])
    assert FreeConfig.from_dict(off.to_dict()) == off  # an old key form reads as off
    assert on.screening.trigger_refine_steps > 0
    unrefined = on.to_dict()
    for name in ("trigger_refine_steps", "trigger_refine_below", "trigger_confirmations"):
        del unrefined["screening"][name]  # a key from before refinement: it ran none
    before = FreeConfig.from_dict(unrefined)
    assert before.screening.trigger_refine_steps == 0 and before.to_dict() == unrefined
    assert before.screening.trigger_confirmations == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("trigger_steps", -1),
        ("trigger_batch", 0),
        ("trigger_lr", 0.0),
        ("trigger_mask_weight", -1.0),
        ("min_trigger_flip", 1.5),
        ("min_trigger_patch", -0.1),
        ("trigger_refine_steps", -1),
        ("trigger_refine_below", 1.5),
        ("trigger_confirmations", -1),
    ],
)
def test_trigger_settings_out_of_range_are_refused(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        ScreeningConfig(**{field: value})


def test_a_single_probe_leaves_the_teacher_unscanned_rather_than_failing() -> None:
    result = screen_teacher(_shortcut_teacher(), SCAN, _probes(1), max_classes=5)
    assert result.fingerprint is not None and result.fingerprint.trigger is None
