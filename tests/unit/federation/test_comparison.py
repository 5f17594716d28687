"""The main job's comparison: one Average, the best owner, the meta-val verdict and the switch."""

import numpy as np
import pytest
import torch

from free_common.data.sources import union
from free_common.evaluation import EvaluationError
from free_common.free.teachers import InMemoryTeachers, Teacher
from free_common.models import ModelSpec, build_model
from free_common.protocols import ProtocolSettings
from server.comparison import (
    MethodResult,
    average_candidate,
    best_owner_candidate,
    by_domain,
    compare,
    paired_interval,
    random_candidate,
    verdict,
)
from tests.unit.core.test_evaluation import blob_split

SPEC = ModelSpec("conv4", image_size=16, width=4, num_classes=4)


def _teacher(teacher_id: str, seed: int, spec: ModelSpec = SPEC, scale: float = 1.0) -> Teacher:
    torch.manual_seed(seed)
    model = build_model(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    keys = tuple(f"{teacher_id}/{c}" for c in range(spec.num_classes))
    return Teacher(teacher_id, spec, model, keys)


def test_average_is_the_elementwise_mean_of_the_learners_spec_only() -> None:
    a, b = _teacher("a", 1), _teacher("b", 2)
    other = _teacher("c", 3, ModelSpec("conv4", image_size=16, width=8, num_classes=4))
    cand = average_candidate(InMemoryTeachers([a, b, other]), SPEC)
    assert cand.model is not None and cand.note == "mean of 2 conv4 owners"
    got = cand.model.state_dict()
    for name, value in a.model.state_dict().items():
        if value.is_floating_point() and "running" not in name:
            want = (value.double() + b.model.state_dict()[name].double()) / 2
            torch.testing.assert_close(got[name].double(), want, rtol=0, atol=1e-6)
    # the average of identical models is that model
    same = average_candidate(InMemoryTeachers([a, _teacher("a2", 1)]), SPEC)
    assert same.model is not None
    for name, value in a.model.named_parameters():
        torch.testing.assert_close(same.model.state_dict()[name], value.detach())


def test_no_owner_with_the_learners_spec_gives_a_missing_average_that_says_why() -> None:
    other = _teacher("c", 3, ModelSpec("conv4", image_size=16, width=8, num_classes=4))
    cand = average_candidate(InMemoryTeachers([other]), SPEC)
    assert cand.model is None and "no conv4 owner" in cand.note


def test_best_owner_is_the_best_nearest_centroid_score_among_the_learners_backbones() -> None:
    data = blob_split(num_classes=4, per_class=6)
    dead = _teacher("dead", 1, scale=0.0)  # constant features: chance accuracy
    alive = _teacher("alive", 2)
    wide = _teacher("wide", 3, ModelSpec("conv4", image_size=16, width=8, num_classes=4))
    source = InMemoryTeachers([dead, alive, wide])
    kwargs = {"n_way": 4, "k_shot": 1, "q_query": 2, "n_tasks": 4, "seed": 0}
    cand = best_owner_candidate(source, data, SPEC, **kwargs)  # type: ignore[arg-type]
    assert cand.name == "Best owner" and cand.note.startswith("alive, best of 2 conv4")
    assert cand.model is alive.model
    none = best_owner_candidate(InMemoryTeachers([wide]), data, SPEC, **kwargs)  # type: ignore[arg-type]
    assert none.model is None


def test_compare_runs_every_protocol_on_the_same_tasks_and_scores_on_meta_val() -> None:
    data = blob_split(num_classes=4, per_class=6)
    settings = ProtocolSettings(
        test_tasks=3, val_tasks=2, lrs=(0.01, 0.1), heads=("zero",), protocols=("tuned", "proto")
    )
    cands = [random_candidate(SPEC, 0), average_candidate(InMemoryTeachers([]), SPEC)]
    random_row, missing = compare(
        cands, data, data, n_way=4, shots=(1, 2), q_query=2, settings=settings
    )
    assert set(random_row.results) == {"tuned", "proto"}
    assert set(random_row.results["tuned"]) == {1, 2}
    best_val = [
        max(v for row in random_row.results["tuned"][k].val.values() for v in row.values())
        for k in (1, 2)
    ]
    assert random_row.val_score == pytest.approx(sum(best_val) / 2)
    assert missing.results == {} and missing.val_score is None


def test_worker_processes_give_the_results_of_one_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Jobs in two spawned workers (one thread each) match the same jobs run here."""
    monkeypatch.setattr("server.workers.usable_cpus", lambda: 2)
    data = blob_split(num_classes=4, per_class=6)
    settings = ProtocolSettings(
        test_tasks=4, val_tasks=2, lrs=(0.01, 0.1), heads=("zero", "proto"),
        protocols=("tuned", "proto"),
    )  # fmt: skip
    cands = [random_candidate(SPEC, 0), random_candidate(SPEC, 1)]
    kwargs = {"n_way": 4, "shots": (1, 2), "q_query": 2, "settings": settings}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = compare(cands, data, data, **kwargs, workers=1)  # type: ignore[arg-type]
    finally:
        torch.set_num_threads(threads)
    apart = compare(cands, data, data, **kwargs, workers=2)  # type: ignore[arg-type]
    for a, b in zip(here, apart, strict=True):
        assert a.name == b.name and a.val_score == b.val_score
        for protocol in ("tuned", "proto"):
            for k in (1, 2):
                ra, rb = a.results[protocol][k], b.results[protocol][k]
                assert (ra.lr, ra.head, ra.val) == (rb.lr, rb.head, rb.val)
                assert ra.accuracies.tolist() == rb.accuracies.tolist()


def test_each_domain_is_its_share_of_the_tasks_each_drawn_within_one_domain() -> None:
    glyphs, icons = blob_split(num_classes=4, per_class=6, seed=1), blob_split(num_classes=5)
    test = union([glyphs, icons], ["glyphs", "icons"])
    settings = ProtocolSettings(
        test_tasks=6, val_tasks=2, lrs=(0.01, 0.3), heads=("zero",), protocols=("tuned", "proto"),
        by_domain=True,
    )  # fmt: skip
    cands = [random_candidate(SPEC, 0), average_candidate(InMemoryTeachers([]), SPEC)]
    methods = compare(cands, test, test, n_way=4, shots=(1,), q_query=2, settings=settings)
    union_tuned = methods[0].results["tuned"][1]
    assert union_tuned.result.domains == ("glyphs", "icons") * 3
    found = by_domain(methods)
    assert list(found) == ["glyphs", "icons"]
    random_row, missing = found["icons"]
    assert missing.results == {}  # a candidate without a model stays empty
    tuned = random_row.results["tuned"][1]
    assert (tuned.lr, tuned.head) == (union_tuned.lr, union_tuned.head)  # nothing chosen again
    assert tuned.result.n_tasks == 3
    assert tuned.accuracies.tolist() == union_tuned.accuracies[1::2].tolist()
    assert tuned.result.mean == pytest.approx(float(union_tuned.accuracies[1::2].mean()))
    assert set(random_row.results["proto"]) == {1}
    # the union's mean is the mean over domains: equal task counts
    glyph_mean = found["glyphs"][0].results["tuned"][1].result.mean
    assert union_tuned.result.mean == pytest.approx((glyph_mean + tuned.result.mean) / 2)
    # one domain: nothing to split
    plain = compare(cands, glyphs, glyphs, n_way=4, shots=(1,), q_query=2, settings=settings)
    assert by_domain(plain) == {}


def test_the_domain_rows_hold_the_protocols_that_ran_and_no_empty_ones() -> None:
    from server.federation import compare_domains

    test = union([blob_split(num_classes=4, per_class=6, seed=1), blob_split(num_classes=5)],
                 ["glyphs", "icons"])  # fmt: skip
    settings = ProtocolSettings(test_tasks=2, protocols=("proto",), by_domain=True)  # no meta-val
    methods = compare([random_candidate(SPEC, 0)], test, test, n_way=4, shots=(1,), q_query=2,
                      settings=settings)  # fmt: skip
    rows = compare_domains(methods)
    assert list(rows) == ["glyphs", "icons"]
    for domain_rows in rows.values():
        assert [(r.protocol, list(r.shots)) for r in domain_rows] == [("proto", [1])]


def test_a_domain_with_no_task_has_no_table_and_naming_it_is_an_error() -> None:
    narrow = union([blob_split(num_classes=3), blob_split(num_classes=5)], ["glyphs", "icons"])
    settings = ProtocolSettings(test_tasks=2, protocols=("proto",), by_domain=True)
    methods = compare([random_candidate(SPEC, 0)], narrow, narrow, n_way=4, shots=(1,),
                      q_query=2, settings=settings)  # fmt: skip
    assert list(by_domain(methods)) == ["icons"]
    result = methods[0].results["proto"][1].result
    with pytest.raises(EvaluationError, match="no task of domain 'glyphs'"):
        result.of_domain("glyphs")


def _scores(**scores: float) -> list[MethodResult]:
    return [MethodResult(name.replace("_", " "), "", {}, s) for name, s in scores.items()]


def test_a_free_that_wins_ships_and_says_by_how_much() -> None:
    v = verdict(_scores(FREE=0.70, Random=0.60, Average=0.65))
    assert v is not None and v.best == v.shipped == "FREE"
    assert v.free_margin == pytest.approx(0.05)
    assert v.line.startswith("meta-val: FREE is best, +5.00 points over Average")


def test_a_free_that_loses_is_said_in_one_line_and_the_switch_decides_what_ships() -> None:
    methods = _scores(FREE=0.60, Random=0.62, Best_owner=0.70)
    best = verdict(methods, "best")
    assert best is not None and best.best == best.shipped == "Best owner"
    assert best.free_margin == pytest.approx(-0.10)
    assert best.line.startswith("WARNING: FREE IS NOT THE BEST MODEL ON META-VAL: Best owner")
    assert best.line.endswith("the export ships Best owner (export.ship=best)")
    anyway = verdict(methods, "free")
    assert anyway is not None and anyway.best == "Best owner" and anyway.shipped == "FREE"
    assert anyway.to_dict()["meta_val"] == {"FREE": 0.6, "Random": 0.62, "Best owner": 0.7}


def _tasks(name: str, accuracies: list[float]) -> MethodResult:
    values = np.array(accuracies)
    return MethodResult(name, "", {}, float(values.mean()), values)


def test_the_margin_carries_its_paired_interval_and_says_when_it_is_noise() -> None:
    free = [0.8, 0.6, 0.9, 0.7, 0.8, 0.6]
    close = verdict([_tasks("FREE", free), _tasks("Best owner", [0.7, 0.7, 0.8, 0.8, 0.7, 0.7])])
    assert close is not None and close.margin_tasks == 6
    d = np.array(free) - np.array([0.7, 0.7, 0.8, 0.8, 0.7, 0.7])
    assert close.margin_ci95 == pytest.approx(1.96 * d.std() / np.sqrt(6))
    assert close.free_margin == pytest.approx(d.mean())
    assert f"paired 95% CI ±{100 * close.margin_ci95:.2f} over 6 tasks, within the noise" in (
        close.line
    )
    assert close.to_dict()["margin_tasks"] == 6
    clear = verdict([_tasks("FREE", free), _tasks("Random", [f - 0.3 for f in free])])
    assert clear is not None and clear.margin_ci95 == pytest.approx(0.0, abs=1e-9)
    assert "over 6 tasks)" in clear.line and "noise" not in clear.line
    unpaired = verdict([_tasks("FREE", free), _tasks("Random", [0.5, 0.5])])
    assert unpaired is not None and unpaired.margin_ci95 is None and "CI" not in unpaired.line
    assert paired_interval(np.array([0.5]), np.array([0.4])) == (None, 0)


def test_compare_keeps_each_methods_per_task_meta_val_accuracies_behind_its_score() -> None:
    data = blob_split(num_classes=4, per_class=6)
    settings = ProtocolSettings(
        test_tasks=2, val_tasks=3, lrs=(0.01, 0.1), heads=("zero",), protocols=("tuned",)
    )
    (row,) = compare(
        [random_candidate(SPEC, 0)], data, data, n_way=4, shots=(1, 2), q_query=2,
        settings=settings,
    )  # fmt: skip
    assert row.val_tasks.shape == (6,)  # 3 tasks per shot, shots one after the other
    assert row.val_score == pytest.approx(row.val_tasks.mean())


def test_no_scores_no_verdict_and_a_bad_switch_is_refused() -> None:
    assert verdict([MethodResult("FREE", "")]) is None
    with pytest.raises(ValueError, match="export.ship"):
        verdict(_scores(FREE=0.5), "latest")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("export.ship", "latest"),
        ("compare.lrs", "fast"),
        ("compare.lrs", "0.1,-1"),
        ("compare.protocols", "tuned,fixed"),
        ("compare.heads", "wide"),
        ("compare.val-tasks", 0),
        ("compare.workers", -1),
    ],
)
def test_bad_comparison_settings_are_refused_when_the_run_config_is_read(
    key: str, value: object
) -> None:
    from server.federation import FederationSettings, SettingsError

    with pytest.raises(SettingsError):
        FederationSettings.from_run_config({key: value})


def test_without_a_learner_every_architecture_taking_the_input_competes() -> None:
    data = blob_split(num_classes=4, per_class=6)
    wide = _teacher("wide", 3, ModelSpec("conv4", image_size=16, width=8, num_classes=4))
    rgb = _teacher(
        "rgb",
        4,
        ModelSpec("conv4", in_channels=3, image_size=16, width=4, mean=(0.5,) * 3, std=(0.5,) * 3),
    )
    kwargs = {"n_way": 4, "k_shot": 1, "q_query": 2, "n_tasks": 4, "seed": 0}
    cand = best_owner_candidate(InMemoryTeachers([rgb, wide]), data, None, **kwargs)  # type: ignore[arg-type]
    assert cand.model is wide.model and cand.note == "wide (conv4), best of 1 owners on meta-val"
