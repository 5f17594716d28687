import pytest

from free_common.evaluation import evaluate
from free_common.models import ModelSpec, build_model
from free_common.protocols import (
    PUBLISHED_LR,
    ProtocolSettings,
    TaskSetting,
    meta_test,
    published_head,
)
from tests.unit.core.test_evaluation import blob_split

SPEC = ModelSpec("conv4", image_size=16, width=4, num_classes=2)
SMALL = ProtocolSettings(
    test_tasks=3, test_seed=5, val_tasks=2, val_seed=9, lrs=(0.01, 0.1), steps=2
)


def test_every_protocol_is_the_plain_evaluation_it_names():
    model, data = build_model(SPEC), blob_split()
    setting = TaskSetting(n_way=2, k_shot=1, q_query=2)
    results = meta_test(model, data, data, setting, SMALL)
    assert list(results) == ["tuned", "published", "proto"]
    kwargs = {"n_way": 2, "k_shot": 1, "q_query": 2, "n_tasks": 3, "seed": 5, "steps": 2}
    published = evaluate(model, data, lr=PUBLISHED_LR, head="learned", **kwargs)
    assert results["published"].result.accuracies.tolist() == published.accuracies.tolist()
    tuned = results["tuned"]
    again = evaluate(model, data, lr=tuned.lr, head=tuned.head, **kwargs)
    assert tuned.result.accuracies.tolist() == again.accuracies.tolist()
    # the tuned choice is the best point of its own meta-val grid
    best = max(v for row in tuned.val.values() for v in row.values())
    assert tuned.val[tuned.head][str(tuned.lr)] == best
    proto = evaluate(model, data, mode="proto", **kwargs)
    assert results["proto"].result.accuracies.tolist() == proto.accuracies.tolist()
    assert results["proto"].lr is None and results["proto"].head == "none"


def test_a_task_wider_than_the_learned_head_uses_prototypes_and_never_the_learned_head():
    model, data = build_model(SPEC), blob_split()  # 2 outputs, 4-way tasks
    assert published_head(model, 4) == "proto" and published_head(model, 2) == "learned"
    results = meta_test(model, data, data, TaskSetting(4, 1, 2), SMALL)
    assert results["published"].head == "proto"
    assert set(results["tuned"].val) == {"zero", "proto"}


def test_only_the_requested_protocols_run():
    settings = ProtocolSettings(test_tasks=2, val_tasks=1, protocols=("proto",))
    results = meta_test(
        build_model(SPEC), blob_split(), blob_split(), TaskSetting(2, 1, 2), settings
    )
    assert list(results) == ["proto"]


@pytest.mark.parametrize(
    "kwargs", [{"protocols": ("fixed",)}, {"protocols": ()}, {"test_tasks": 0}]
)
def test_bad_protocol_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        ProtocolSettings(**kwargs)
