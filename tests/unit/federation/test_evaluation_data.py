"""Evaluation data is configuration; owners' inputs are adapted or refused by one rule."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from free_common.config import FreeConfig
from free_common.data.base import ClassImages, DatasetError
from free_common.data.registry import DATASETS
from free_common.models import ModelSpec
from free_common.run_config import RunConfig
from server.federation import (
    NOTHING_EVALUATED,
    FederationSettings,
    load_evaluation_data,
    make_finisher,
    run_federation,
)
from server.round import Reply
from server.validation import Limits, Rejected, Validator

from .helpers import make_submission


def _spec(channels: int = 1, side: int = 16, classes: int = 3) -> ModelSpec:
    return ModelSpec(
        arch="conv4",
        width=4,
        num_classes=classes,
        in_channels=channels,
        image_size=side,
        mean=(0.5,) * channels,
        std=(0.5,) * channels,
    )


@pytest.mark.parametrize(
    ("channels", "side", "accepted"),
    [(1, 32, True), (3, 32, True), (3, 16, True), (1, 128, True), (4, 32, False), (1, 132, False)],
)
def test_inputs_within_the_scale_are_adapted_others_refused(
    channels: int, side: int, accepted: bool
) -> None:
    validator = Validator(Limits().around_input(32, 4.0))
    sub = make_submission(spec=_spec(channels, side), signed=False)
    if accepted:
        assert validator.validate(sub, node_id=1).spec.image_size == side
        return
    with pytest.raises(Rejected) as err:
        validator.validate(sub, node_id=1)
    assert err.value.reason == "input"
    assert ("channel" if channels == 4 else "outside 8..128") in err.value.message


def test_scale_limits_round_toward_the_accepted_range() -> None:
    limits = Limits().around_input(32, 1.5)
    assert (limits.min_input_side, limits.max_input_side) == (22, 48)
    assert Limits().around_input(32, 1.0).min_input_side == 32


def _split(name: str, classes: int = 6, per_class: int = 6) -> ClassImages:
    rng = np.random.default_rng(len(name))
    images = rng.integers(0, 256, size=(classes * per_class, 1, 16, 16), dtype=np.uint8)
    labels = np.repeat(np.arange(classes, dtype=np.int64), per_class)
    return ClassImages(name, images, labels, tuple(f"c{i}" for i in range(classes)))


def _collect_specs(specs: list[ModelSpec]):  # type: ignore[no-untyped-def]
    def collect(r: int) -> tuple[dict[str, int], list[Reply]]:
        sent = {f"m{i}": i + 1 for i in range(len(specs))}
        replies = [
            Reply(f"m{i}", submission=make_submission(f"owner-{i:03d}", seed=i, spec=s))
            for i, s in enumerate(specs)
        ]
        return sent, replies

    return collect


def _run(tmp_path: Path, specs: list[ModelSpec], val: bool, test: bool, **settings: object):  # type: ignore[no-untyped-def]
    config = FreeConfig.preset("test")
    s = replace(FederationSettings(min_replies=1), **settings)  # type: ignore[arg-type]
    val_data, test_data = (_split("val") if val else None), (_split("test") if test else None)
    return run_federation(
        s,
        config,
        _collect_specs(specs),
        run_dir=tmp_path,
        val_data=val_data,
        keys=None,
        finish=make_finisher(tmp_path, s, config, val_data, test_data, 0.0),
        progress=False,
    )


def test_other_inputs_train_with_the_rest_and_the_report_names_them(tmp_path: Path) -> None:
    """A grey 16 px meta-learner; owners at RGB 24 px and grey 20 px are adapted, 72 px refused."""
    specs = [_spec(), _spec(3, 24), _spec(1, 20), _spec(1, 72)]
    summary = _run(tmp_path, specs, val=True, test=True, export=False, compare_val_tasks=2)
    assert summary["pool"]["models"] == 3
    rejected = summary["rounds"][0]["rejected"]
    assert list(rejected.values()) == ["input"]
    methods = ["FREE", "Random", "Average", "Best owner"]
    assert [r["method"] for r in summary["rows"]] == methods * 2  # tuned, then prototypes
    report = Path(summary["report"]["markdown"]).read_text()
    assert "## Inputs adapted to the meta-learner's" in report
    assert "(owner-001): 3x24x24 -> 1x16x16" in report
    assert "(owner-002): 1x20x20 -> 1x16x16" in report
    assert "| input | input side 72 outside 4..64" in report
    assert "- meta-learner input: `1x16x16`" in report


def test_without_meta_test_data_nothing_is_evaluated_and_the_run_still_exports(
    tmp_path: Path,
) -> None:
    summary = _run(tmp_path, [_spec(), _spec()], val=True, test=False)
    assert summary["rows"] == [] and summary["table"] == NOTHING_EVALUATED
    assert summary["best_iteration"] >= 1
    assert Path(summary["export"]["proto"], "model.onnx").is_file()
    report = Path(summary["report"]["markdown"]).read_text()
    assert "**Nothing was evaluated: no meta-test data (data.test = none).**" in report
    assert "accuracy_plot" not in summary["report"]


def test_without_meta_val_data_free_is_skipped_and_the_pool_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    summary = _run(tmp_path, [_spec(), _spec()], val=False, test=True)
    assert summary["pool"]["models"] == 2
    assert not (tmp_path / "free").exists() and summary["export"] == {}
    assert summary["best_iteration"] is None
    assert "FREE skipped: no meta-val data (data.val = none)" in caplog.text
    assert "export skipped: FREE has no model (not trained: no meta-val data)" in caplog.text
    free, *baselines = summary["rows"]
    assert free["note"] == "not trained: no meta-val data" and free["shots"] == {}
    # without meta-val no rate can be tuned and no owner chosen: prototypes only
    assert [r["method"] for r in baselines] == ["Random", "Average"]
    assert {r["protocol"] for r in summary["rows"]} == {"proto"} and summary["verdict"] is None
    assert json.loads((tmp_path / "report" / "report.json").read_text())["rows"][0]["shots"] == {}


def _folder(root: Path, classes: list[str], sizes: list[tuple[int, int]]) -> Path:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i, (w, h) in enumerate(sizes):
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.png")
    return root


def test_evaluation_sets_load_from_folders_at_the_meta_learner_input(tmp_path: Path) -> None:
    val = _folder(tmp_path / "val", ["a", "b", "c"], [(20, 30), (64, 64)])
    test = _folder(tmp_path / "test", ["d", "e", "f", "g"], [(40, 40)])
    rc = RunConfig({"preset": "test", "data.val": f"folder:{val}", "data.test": f"folder:{test}"})
    config = rc.free_config()
    val_data, test_data = load_evaluation_data(FederationSettings.from_run_config(rc), config)
    assert val_data is not None and test_data is not None
    assert val_data.images.shape == (6, 3, 16, 16) and val_data.class_names == ("a", "b", "c")
    assert test_data.num_classes == 4
    grey = RunConfig({"data.val": "none", "data.test": f"folder:{test}", "data.channels": 1})
    val_data, test_data = load_evaluation_data(
        FederationSettings.from_run_config(grey), grey.free_config()
    )
    assert val_data is None and test_data is not None
    assert test_data.images.shape == (4, 1, 32, 32)


def test_glyphs_from_an_assets_folder_equal_the_package_copy(tmp_path: Path) -> None:
    from free_common.data.sources import ASSETS_DIR

    rc = RunConfig({"preset": "test"})
    packaged, _ = load_evaluation_data(FederationSettings(), rc.free_config())
    moved = FederationSettings(assets_dir=str(ASSETS_DIR))
    from_dir, _ = load_evaluation_data(moved, rc.free_config())
    assert packaged is not None and from_dir is not None
    assert packaged.images.shape[1:] == (1, 16, 16)
    assert np.array_equal(packaged.images, from_dir.images)
    with pytest.raises(DatasetError, match="glyphs \\(val\\).*glyph manifest .*unreadable"):
        load_evaluation_data(FederationSettings(assets_dir=str(tmp_path)), rc.free_config())


@pytest.mark.parametrize("problem", ["missing", "empty class", "unreadable", "relative assets"])
def test_evaluation_data_errors_are_clear(tmp_path: Path, problem: str) -> None:
    root = _folder(tmp_path / "held-out", ["a", "b"], [(24, 24)])
    settings = FederationSettings(val_source=f"folder:{root}", test_source="none")
    message = {
        "missing": "missing directory .*nowhere",
        "empty class": "class folder .*b holds no images",
        "unreadable": "cannot decode image .*0.png",
        "relative assets": "data.assets-dir 'assets' must be an absolute path",
    }[problem]
    if problem == "missing":
        settings = replace(settings, val_source=f"folder:{tmp_path / 'nowhere'}")
    elif problem == "empty class":
        for f in (root / "b").iterdir():
            f.unlink()
    elif problem == "unreadable":
        (root / "a" / "0.png").write_bytes(b"not a png")
    else:
        settings = replace(settings, val_source="glyphs", assets_dir="assets")
    with pytest.raises(DatasetError, match=message):
        load_evaluation_data(settings, FreeConfig.preset("test"))


def _sized(name: str, counts: list[int]) -> ClassImages:
    labels = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    images = np.zeros((len(labels), 1, 16, 16), dtype=np.uint8)
    return ClassImages(name, images, labels, tuple(f"c{i}" for i in range(len(counts))))


def test_queries_fit_the_smallest_class_so_every_class_can_be_drawn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Icon classes hold 10-13 images: 5 shots + 15 queries would leave out all but two."""
    from server.federation import fit_evaluation

    paper = FreeConfig.preset("paper-cpu")
    assert (paper.eval.shots, paper.eval.q_query) == ((1, 5), 15)
    glyph_like = _sized("glyphs/val", [20] * 8)
    assert fit_evaluation(paper, glyph_like, None) == paper
    icon_like = _sized("icons/test", [10, 13, 12, 11, 10, 20])
    fitted = fit_evaluation(paper, glyph_like, icon_like)
    assert fitted.eval.q_query == 5 and replace(fitted, eval=paper.eval) == paper
    assert "5 queries per class instead of 15: the smallest class of icons/test" in caplog.text
    assert fit_evaluation(paper, None, None) == paper


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ([20, 20, 5, 20, 20], "icons/val: a class holds 5 images; 5-shot tasks need at least 6"),
        ([20, 20, 20, 20], "icons/val: 4 classes; 5-way tasks need 5"),
    ],
)
def test_evaluation_sets_too_small_for_the_tasks_are_refused_at_start(
    counts: list[int], message: str
) -> None:
    from server.federation import fit_evaluation

    with pytest.raises(DatasetError, match=message):
        fit_evaluation(FreeConfig.preset("paper-cpu"), _sized("icons/val", counts))


@pytest.mark.skipif("icons" not in DATASETS, reason="the icons-v1 benchmark is not on this branch")
def test_icons_named_for_every_data_key_give_an_rgb_run() -> None:
    """What `scripts/run_main.sh --run-config 'data.train="icons" ...'` sets up."""
    from client.owner import prepare_owner
    from free_common.data.sources import ASSETS_DIR
    from server.federation import fit_evaluation

    icons = dict.fromkeys(("data.train", "data.val", "data.test"), "icons")
    rc = RunConfig({**icons, "data.assets-dir": str(ASSETS_DIR)})
    config = rc.free_config()
    assert (config.meta_learner.channels, config.meta_learner.image_size) == (3, 32)
    val, test = load_evaluation_data(FederationSettings.from_run_config(rc), config)
    assert val is not None and test is not None and test.images.shape[1:] == (3, 32, 32)
    assert fit_evaluation(config, val, test).eval.q_query == 5
    plan = prepare_owner({"partition-id": 0, "num-partitions": 20}, rc)
    assert plan.spec.in_channels == 3 and plan.data.num_classes == 5
