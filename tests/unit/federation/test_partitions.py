from collections import Counter

import pytest

from client.partitions import PartitionError, assign_owner, parse_arch_mix


def test_assignment_is_deterministic_and_disjoint() -> None:
    owners = [assign_owner(p, 20, num_classes=120, seed=3) for p in range(20)]
    again = [assign_owner(p, 20, num_classes=120, seed=3) for p in range(20)]
    assert owners == again
    classes = [c for o in owners for c in o.classes]
    assert len(classes) == 100 == len(set(classes))
    assert all(len(o.classes) == 5 for o in owners)
    assert owners != [assign_owner(p, 20, num_classes=120, seed=4) for p in range(20)]


def test_more_owners_than_classes_reuse_in_new_order() -> None:
    owners = [assign_owner(p, 100, num_classes=60, seed=0) for p in range(100)]
    assert all(len(set(o.classes)) == 5 for o in owners)
    first = [c for o in owners[:12] for c in o.classes]
    assert sorted(first) == list(range(60))


def test_arch_mix_proportions() -> None:
    archs = Counter(
        assign_owner(
            p, 20, num_classes=120, seed=0, arch_mix="conv4:2,resnet10:1,resnet18:1"
        ).spec.arch
        for p in range(20)
    )
    assert archs == {"conv4": 10, "resnet10": 5, "resnet18": 5}


@pytest.mark.parametrize("mix", ["", "vgg:1", "conv4:x", "conv4:-1", "conv4:0"])
def test_bad_mix(mix: str) -> None:
    with pytest.raises(PartitionError):
        parse_arch_mix(mix)


def test_bad_partition() -> None:
    with pytest.raises(PartitionError):
        assign_owner(5, 5, num_classes=20, seed=0)
    with pytest.raises(PartitionError):
        assign_owner(0, 5, num_classes=4, seed=0)


def test_prepare_owner_in_simulation_holds_only_its_classes() -> None:
    from client.owner import prepare_owner
    from free_common.submission import demo_private_key

    rc = {"fed.arch-mix": "conv4:2,resnet10:1,resnet18:1", "fed.demo-key-secret": "s", "seed": 1}
    plan = prepare_owner({"partition-id": 2, "num-partitions": 20}, rc)
    assert plan.owner_id == "owner-002"
    assert plan.data.num_classes == 5 and plan.spec.num_classes == 5
    assert plan.data.images.shape[1:] == (1, 32, 32)
    assert plan.spec.arch == "resnet18"
    assert plan.private_key is not None
    assert plan.private_key.public_key().public_bytes_raw() == (
        demo_private_key("s", "owner-002").public_key().public_bytes_raw()
    )


def test_deployed_owner_reads_its_image_folder(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np
    from PIL import Image

    from client.owner import OwnerError, prepare_owner

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog", "owl"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(
                tmp_path / cls / f"{i}.png"
            )
    node = {
        "data-path": str(tmp_path),
        "owner-id": "hospital-a",
        "image-size": 32,
        "channels": 1,
        "share-labels": "true",
    }
    plan = prepare_owner(node, {})
    assert plan.owner_id == "hospital-a"
    assert plan.data.images.shape == (9, 1, 32, 32)
    assert plan.spec.num_classes == 3 and plan.spec.in_channels == 1
    assert plan.label_names == ("cat", "dog", "owl") and plan.label_kind == "shared"
    with pytest.raises(OwnerError, match="owner-id"):
        prepare_owner({"data-path": str(tmp_path)}, {})


def test_without_overlap_the_assignment_is_the_one_runs_always_had() -> None:
    """Recorded from the assignment before fed.class-overlap existed (same seed, same owners)."""
    owners = [assign_owner(p, 30, num_classes=23, seed=3, classes_per_owner=4) for p in range(7)]
    assert [o.classes for o in owners] == [
        (13, 7, 8, 0),
        (12, 3, 15, 11),
        (9, 1, 17, 20),
        (4, 22, 19, 16),
        (2, 5, 21, 10),
        (8, 9, 5, 15),
        (21, 0, 6, 13),
    ]


@pytest.mark.parametrize("overlap", [1, 2, 4])
def test_neighbouring_owners_share_exactly_the_overlap(overlap: int) -> None:
    n, per = 23, 5
    stride = per - overlap
    per_pass = (n - per) // stride + 1
    owners = [
        assign_owner(p, 40, num_classes=n, seed=1, classes_per_owner=per, overlap=overlap)
        for p in range(40)
    ]
    for p in range(39):
        a, b = owners[p].classes, owners[p + 1].classes
        assert len(set(a)) == per
        if (p + 1) % per_pass:  # same pass: the next window starts `stride` classes later
            assert len(set(a) & set(b)) == overlap
            assert a[stride:] == b[:overlap]
    first_pass = {c for o in owners[:per_pass] for c in o.classes}
    assert len(first_pass) == per + (per_pass - 1) * stride <= n


@pytest.mark.parametrize("overlap", [-1, 5, 7])
def test_overlap_must_be_below_the_classes_per_owner(overlap: int) -> None:
    with pytest.raises(PartitionError, match="class overlap"):
        assign_owner(0, 4, num_classes=20, seed=0, overlap=overlap)


def _rgb_classes(root, classes: list[str], sizes: list[int]):  # type: ignore[no-untyped-def]
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i, side in enumerate(sizes):
            pixels = rng.integers(0, 255, (side, side + 3, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_simulated_owners_partition_a_folder_of_class_folders(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from client.owner import prepare_owner

    root = _rgb_classes(tmp_path / "mine", [f"k{i}" for i in range(6)], [20, 28, 40])
    rc = {
        "data.train": f"folder:{root}",
        "data.val": "none",
        "data.test": "none",
        "fed.classes-per-owner": 3,
        "fed.class-overlap": 1,
        "fed.arch-mix": "conv4",
    }
    plans = [prepare_owner({"partition-id": p, "num-partitions": 2}, rc) for p in range(2)]
    for plan in plans:
        assert plan.data.images.shape == (9, 3, 32, 32)  # RGB, the preset's side
        assert (plan.spec.in_channels, plan.spec.image_size, plan.spec.num_classes) == (3, 32, 3)
    names = [set(p.data.class_names) for p in plans]
    assert len(names[0] & names[1]) == 1 and names[0] | names[1] <= {f"k{i}" for i in range(6)}


def test_simulated_owners_partition_a_registry_dataset(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from client.owner import prepare_owner

    from ..data.fake_datasets import write_image_folder

    for split, classes in (("train", ("a", "b", "c", "d")), ("val", ("e", "f")), ("test", ("g",))):
        write_image_folder(tmp_path / split, classes=classes, per_class=2, size=12)
    rc = {
        "data.train": f"image-folder:{tmp_path}",
        "data.image-size": 16,
        "data.channels": 1,
        "fed.classes-per-owner": 2,
    }
    plan = prepare_owner({"partition-id": 1, "num-partitions": 2}, rc)
    assert plan.data.images.shape == (4, 1, 16, 16)
    assert set(plan.data.class_names) <= {"a", "b", "c", "d"}


def test_simulated_owner_errors_name_the_problem(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from client.owner import OwnerError, prepare_owner
    from free_common.data.base import DatasetError

    node = {"partition-id": 0, "num-partitions": 2}
    with pytest.raises(OwnerError, match="data.train = none"):
        prepare_owner(node, {"data.train": "none"})
    with pytest.raises(OwnerError, match="data.train = 'folder:mine'.*absolute"):
        prepare_owner(node, {"data.train": "folder:mine"})
    with pytest.raises(DatasetError, match="missing directory"):
        prepare_owner(node, {"data.train": f"folder:{tmp_path / 'gone'}"})
    root = _rgb_classes(tmp_path / "two", ["x", "y"], [16])
    with pytest.raises(OwnerError, match="5 classes per owner from a source of 2 classes"):
        prepare_owner(node, {"data.train": f"folder:{root}", "data.test": "none"})
    with pytest.raises(OwnerError, match="class overlap 5"):
        prepare_owner(node, {"fed.class-overlap": 5})
