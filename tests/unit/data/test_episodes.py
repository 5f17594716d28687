import numpy as np
import pytest
import torch

from free_common.data.base import ClassImages, DatasetError, check_split_name
from free_common.data.episodes import EpisodeSampler


def make_split(num_classes: int = 6, per_class: int = 8) -> ClassImages:
    labels = np.repeat(np.arange(num_classes), per_class).astype(np.int64)
    # Pixel value encodes the class so episodes can be checked against their labels.
    images = np.broadcast_to(
        (labels * 10).astype(np.uint8)[:, None, None, None], (len(labels), 1, 4, 4)
    )
    return ClassImages(
        "toy/train", images.copy(), labels, tuple(f"c{i}" for i in range(num_classes))
    )


def test_episode_shapes_and_labels_are_consistent():
    ep = EpisodeSampler(make_split(), n_way=5, k_shot=2, q_query=3, seed=1).sample()
    assert ep.support_images.shape == (10, 1, 4, 4) and ep.query_images.shape == (15, 1, 4, 4)
    assert ep.support_labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert ep.query_labels.tolist() == sorted([0, 1, 2, 3, 4] * 3)
    assert ep.support_images.dtype == torch.float32 and ep.support_images.max() <= 1.0
    # Every image of episode class i comes from split class classes[i].
    for images, labels in (
        (ep.support_images, ep.support_labels),
        (ep.query_images, ep.query_labels),
    ):
        source = (images[:, 0, 0, 0] * 255 / 10).round().long()
        assert source.tolist() == [ep.classes[i] for i in labels.tolist()]


def test_support_and_query_never_share_an_image():
    data = make_split()
    data.images[:, 0, 0, 1] = np.arange(len(data.labels)) % 256  # make every image unique
    ep = EpisodeSampler(data, n_way=3, k_shot=3, q_query=5, seed=2).sample()
    s = {tuple(x.flatten().tolist()) for x in ep.support_images}
    q = {tuple(x.flatten().tolist()) for x in ep.query_images}
    assert not s & q and len(s) == 9 and len(q) == 15


def test_same_seed_same_episodes_different_seed_different_episodes():
    data = make_split()
    a = [e.classes for e in EpisodeSampler(data, 3, 1, 2, seed=7).episodes(10)]
    b = [e.classes for e in EpisodeSampler(data, 3, 1, 2, seed=7).episodes(10)]
    c = [e.classes for e in EpisodeSampler(data, 3, 1, 2, seed=8).episodes(10)]
    assert a == b and a != c


def test_too_few_classes_or_images_is_a_clear_error():
    with pytest.raises(DatasetError, match="only 6 classes"):
        EpisodeSampler(make_split(), n_way=7, k_shot=1, q_query=1)
    with pytest.raises(DatasetError, match=">= 9 images"):
        EpisodeSampler(make_split(per_class=8), n_way=2, k_shot=4, q_query=5)
    with pytest.raises(ValueError, match="n_way>=2"):
        EpisodeSampler(make_split(), n_way=1, k_shot=1, q_query=1)


def test_class_images_checks_its_invariants():
    good = make_split()
    with pytest.raises(DatasetError, match="uint8"):
        ClassImages("x", good.images.astype(np.float32), good.labels, good.class_names)
    with pytest.raises(DatasetError, match="labels for"):
        ClassImages("x", good.images, good.labels[:-1], good.class_names)
    with pytest.raises(DatasetError, match="labels outside"):
        ClassImages("x", good.images, good.labels, good.class_names[:2])
    with pytest.raises(DatasetError, match=r"\(N, C, H, W\)"):
        ClassImages("x", good.images[:, 0], good.labels, good.class_names)
    with pytest.raises(DatasetError, match="unknown split 'training'"):
        check_split_name("training")


def test_subset_relabels_in_the_given_order():
    sub = make_split().subset([4, 1])
    assert sub.class_names == ("c4", "c1") and sub.num_classes == 2
    assert sub.labels.tolist() == [0] * 8 + [1] * 8
    assert sub.images[0, 0, 0, 0] == 40 and sub.images[8, 0, 0, 0] == 10


def _two_domains(first: int = 6, second: int = 6) -> ClassImages:
    """``first`` classes of domain a, then ``second`` of domain b (pixel = class * 10)."""
    split = make_split(num_classes=first + second)
    return ClassImages(
        split.name,
        split.images,
        split.labels,
        split.class_names,
        ("a",) * first + ("b",) * second,
    )


def test_by_domain_draws_every_task_within_one_domain_the_domains_in_turn():
    data = _two_domains()
    episodes = list(EpisodeSampler(data, 3, 1, 2, seed=4, by_domain=True).episodes(8))
    assert [ep.domain for ep in episodes] == ["a", "b"] * 4
    for ep in episodes:
        assert {data.domains[c] for c in ep.classes} == {ep.domain}
    # without it a task mixes domains (some of 40 draws do) and names none
    mixed = list(EpisodeSampler(data, 3, 1, 2, seed=4).episodes(40))
    assert {ep.domain for ep in mixed} == {""}
    assert any(len({data.domains[c] for c in ep.classes}) == 2 for ep in mixed)


def test_by_domain_changes_nothing_on_a_split_of_one_domain():
    data = make_split()
    plain = EpisodeSampler(data, 3, 1, 2, seed=5).episodes(6)
    split = EpisodeSampler(data, 3, 1, 2, seed=5, by_domain=True).episodes(6)
    for a, b in zip(plain, split, strict=True):
        assert a.classes == b.classes and b.domain == ""
        assert torch.equal(a.query_images, b.query_images)


def test_a_domain_narrower_than_a_task_gets_none_and_says_so(caplog: pytest.LogCaptureFixture):
    data = _two_domains(first=2, second=6)
    with caplog.at_level("WARNING"):
        episodes = list(EpisodeSampler(data, 3, 1, 2, seed=0, by_domain=True).episodes(4))
    assert [ep.domain for ep in episodes] == ["b"] * 4
    assert "domain a gets no 3-way task (2 usable classes)" in caplog.text
    with pytest.raises(DatasetError, match="no domain has 4 classes"):
        EpisodeSampler(_two_domains(first=3, second=3), 4, 1, 2, by_domain=True)
