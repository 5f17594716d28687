"""Several domains in one run: ``data.* = "glyphs+icons"`` (issue 16.4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from client.owner import prepare_owner
from free_common.data.base import ClassImages, DatasetError
from free_common.data.registry import DATASETS
from free_common.data.sources import ASSETS_DIR, MIX, DataSource, union
from free_common.run_config import RunConfig
from server.federation import FederationSettings, load_evaluation_data


def _set(name: str, classes: int, channels: int = 1, side: int = 8) -> ClassImages:
    labels = np.repeat(np.arange(classes), 3)
    images = np.full((len(labels), channels, side, side), 7, dtype=np.uint8)
    return ClassImages(name, images, labels, tuple(f"c{i}" for i in range(classes)))


def test_a_mix_parses_into_its_parts_and_prints_as_written() -> None:
    mix = DataSource.parse("glyphs+icons", key="data.test")
    assert mix.dataset == MIX and [str(p) for p in mix.parts] == ["glyphs", "icons"]
    assert str(mix) == "glyphs+icons" and not mix.is_none
    assert mix.native_channels() == 3  # RGB when any part is
    assert DataSource.parse("glyphs+fashion-mnist").native_channels() == 1
    folder = DataSource.parse("folder:/data/a+b")  # one source when it parses as one
    assert folder.dataset == "folder" and folder.root == "/data/a+b" and not folder.parts


def test_union_offsets_labels_and_names_classes_by_source() -> None:
    joined = union([_set("a", 2), _set("b", 3)], ["glyphs", "icons"])
    assert joined.num_classes == 5 and joined.name == "glyphs+icons"
    assert joined.class_names == ("glyphs/c0", "glyphs/c1", "icons/c0", "icons/c1", "icons/c2")
    assert joined.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    assert joined.domains == ("glyphs",) * 2 + ("icons",) * 3
    with pytest.raises(DatasetError, match="different image shapes"):
        union([_set("a", 2), _set("b", 2, channels=3)], ["x", "y"])
    with pytest.raises(DatasetError, match="one prefix per set"):
        union([_set("a", 2)], ["x", "y"])


def test_a_union_splits_back_into_its_domains_in_order() -> None:
    joined = union([_set("a", 2), _set("b", 3)], ["glyphs", "icons"])
    parts = joined.by_domain()
    assert list(parts) == ["glyphs", "icons"]
    icons = parts["icons"]
    assert icons.name == "glyphs+icons[icons]" and icons.num_classes == 3
    assert icons.class_names == ("icons/c0", "icons/c1", "icons/c2")
    assert icons.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert icons.domains == ("icons",) * 3
    assert _set("a", 2).by_domain() == {}  # one domain: nothing to split
    assert icons.by_domain() == {}


def test_a_missing_folder_in_a_mix_is_named(tmp_path: Path) -> None:
    mix = DataSource.parse(f"glyphs+folder:{tmp_path / 'missing'}")
    with pytest.raises(DatasetError, match="missing"):
        mix.load("val", image_size=32, channels=1)


@pytest.mark.skipif("icons" not in DATASETS, reason="the icons-v1 benchmark is not on this branch")
def test_glyphs_and_icons_in_one_run() -> None:
    """What `scripts/run_main.sh --run-config 'data.train="glyphs+icons" ...'` sets up."""
    mixed = dict.fromkeys(("data.train", "data.val", "data.test"), "glyphs+icons")
    rc = RunConfig({**mixed, "data.assets-dir": str(ASSETS_DIR)})
    config = rc.free_config()
    assert (config.meta_learner.channels, config.meta_learner.image_size) == (3, 32)
    val, test = load_evaluation_data(FederationSettings.from_run_config(rc), config)
    assert val is not None and test is not None
    glyph_test = DataSource.parse("glyphs").load("test", image_size=32, channels=3)
    icon_test = DataSource.parse("icons").load("test", image_size=32, channels=3)
    assert glyph_test is not None and icon_test is not None
    assert test.num_classes == glyph_test.num_classes + icon_test.num_classes
    assert test.images.shape[1:] == (3, 32, 32)
    assert test.class_names[0].startswith("glyphs/") and test.class_names[-1].startswith("icons/")
    plans = [prepare_owner({"partition-id": i, "num-partitions": 8}, rc) for i in range(8)]
    assert [p.owner_id for p in plans] == [f"owner-{i:03d}" for i in range(8)]
    # owners are dealt to the domains in turn and keep their domain's channels
    assert [p.spec.in_channels for p in plans] == [1, 3] * 4
    assert {p.data.name.split("[")[0] for p in plans[0::2]} == {"glyphs/train"}
    # each domain is partitioned on its own: its owners cycle through the architecture mix
    assert [p.spec.arch for p in plans[0::2]] == [p.spec.arch for p in plans[1::2]]
    assert all(p.data.num_classes == 5 for p in plans)
