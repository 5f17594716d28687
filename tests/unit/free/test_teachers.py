import pytest
import torch

from free_common.free.teachers import (
    InMemoryTeachers,
    Teacher,
    TeacherCache,
    TeacherError,
    TeacherSource,
    default_class_keys,
    teacher_from_state_dict,
)
from tests.unit.free.synthetic import random_teacher, tiny_spec


def test_teacher_is_frozen_and_keys_default_to_pseudo_classes() -> None:
    t = random_teacher("a", tiny_spec(3))
    assert t.class_keys == ("a/0", "a/1", "a/2") == default_class_keys("a", 3)
    assert not t.model.training and all(not p.requires_grad for p in t.model.parameters())


def test_bad_keys_and_weights_are_rejected() -> None:
    spec = tiny_spec(3)
    model = random_teacher("a", spec).model
    with pytest.raises(TeacherError, match="class keys"):
        Teacher("a", spec, model, ("x", "y"))
    with pytest.raises(TeacherError, match="duplicate"):
        Teacher("a", spec, model, ("x", "x", "y"))
    with pytest.raises(TeacherError, match="do not fit"):
        teacher_from_state_dict("b", tiny_spec(4), model.state_dict())


def test_in_memory_source_satisfies_protocol() -> None:
    source = InMemoryTeachers([random_teacher("a", tiny_spec(3))])
    assert isinstance(source, TeacherSource) and source.ids() == ["a"]
    with pytest.raises(TeacherError, match="duplicate"):
        source.add([random_teacher("a", tiny_spec(3))])
    with pytest.raises(TeacherError, match="unknown"):
        source.load("zz")


class _CountingSource:
    def __init__(self) -> None:
        self.loads: list[str] = []

    def ids(self) -> list[str]:
        return ["a", "b", "c"]

    def load(self, teacher_id: str) -> Teacher:
        self.loads.append(teacher_id)
        torch.rand(1)  # a source that consumes the global RNG must not disturb the run
        return random_teacher(teacher_id, tiny_spec(3))


def test_lru_cache_bounds_loaded_teachers_and_keeps_global_rng() -> None:
    source = _CountingSource()
    cache = TeacherCache(source, capacity=2, device=torch.device("cpu"))
    state = torch.get_rng_state()
    cache.get_many(["a", "b", "a", "c", "a", "b"])
    assert source.loads == ["a", "b", "c", "b"]
    assert len(cache._cache) == 2
    assert torch.equal(torch.get_rng_state(), state)
