import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from free_common.models import ModelSpec, SpecError


def test_round_trip_through_json():
    spec = ModelSpec(
        "resnet18",
        in_channels=3,
        image_size=84,
        num_classes=5,
        width=16,
        mean=(0.1, 0.2, 0.3),
        std=(0.4, 0.5, 0.6),
    )
    assert ModelSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"arch": "vit"}, "unknown architecture"),
        ({"arch": "conv4", "in_channels": 0}, "in_channels"),
        ({"arch": "conv4", "image_size": 100000}, "image_size"),
        ({"arch": "conv4", "num_classes": 1}, "num_classes"),
        ({"arch": "conv4", "width": True}, "width"),
        ({"arch": "conv4", "mean": (0.5, 0.5)}, "mean has 2 values"),
        ({"arch": "conv4", "std": (0.0,)}, "std must be positive"),
        ({"arch": "conv4", "mean": (float("nan"),)}, "finite"),
    ],
)
def test_bad_values_are_refused_with_a_reason(kwargs: dict, message: str):
    with pytest.raises(SpecError, match=message):
        ModelSpec(**kwargs)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ("[]", "must be an object"),
        ('{"width": 3}', "needs 'arch'"),
        ('{"arch": "conv4", "layers": 3}', "unknown model spec keys: layers"),
        ('{"arch": "conv4", "mean": 0.5}', "mean must be a list"),
    ],
)
def test_bad_json_is_refused_with_a_reason(text: str, message: str):
    with pytest.raises(SpecError, match=message):
        ModelSpec.from_json(text)


KEYS = st.sampled_from(["arch", "in_channels", "image_size", "num_classes", "width", "mean", "std"])
VALUES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=4)
    | st.lists(st.integers() | st.floats() | st.text(max_size=2), max_size=3)
)


@given(st.dictionaries(KEYS | st.text(max_size=8), VALUES))
def test_arbitrary_objects_never_crash_the_parser(data: dict):
    with contextlib.suppress(SpecError):
        ModelSpec.from_dict(data)
