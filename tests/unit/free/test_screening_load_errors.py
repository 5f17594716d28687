"""A teacher that cannot even be parsed is excluded by screening with its reason, not a crash."""

from dataclasses import replace
from pathlib import Path

from safetensors.numpy import load

from free_common.config import FreeConfig
from free_common.data.base import ClassImages
from free_common.free.teachers import InMemoryTeachers, Teacher
from server.free_training import FreeTrainer


class _OneUnparsable(InMemoryTeachers):
    """Serves the given teachers plus ``"corrupt"``, whose weights file does not parse."""

    def ids(self) -> list[str]:
        return [*super().ids(), "corrupt"]

    def load(self, teacher_id: str) -> Teacher:
        if teacher_id == "corrupt":
            load(b"\xff" * 64)  # raises safetensors.SafetensorError, as a damaged file does
        return super().load(teacher_id)


def test_unparsable_teacher_is_excluded_with_a_reason(
    teachers: list[Teacher], val_split: ClassImages, tmp_path: Path
) -> None:
    config = replace(FreeConfig.preset("test"), iterations=1)
    trainer = FreeTrainer(
        config,
        _OneUnparsable(teachers),
        val_data=val_split,
        test_data=None,
        work_dir=tmp_path,
        device="cpu",
    )
    result = trainer.train(progress=False)
    assert set(result.excluded) == {"corrupt"}
    reason = result.excluded["corrupt"]
    assert reason.startswith("cannot load") and "header" in reason
