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
