"""Independent jobs in worker processes (``server.workers``)."""

import pytest
import torch

from server.workers import auto_workers, run_jobs


def _scaled(factor: int, item: int) -> int:
    if item < 0:
        raise ValueError(f"negative item {item}")
    return factor * item


def test_results_keep_the_order_of_the_jobs_in_processes_and_here() -> None:
    items = [3, 1, 4, 1, 5]
    assert run_jobs(_scaled, items, 10, workers=2) == [30, 10, 40, 10, 50]
    assert run_jobs(_scaled, items, 10, workers=1) == [30, 10, 40, 10, 50]
    assert run_jobs(_scaled, [], 10, workers=2) == []


def test_a_failing_job_raises_its_own_error_here() -> None:
    with pytest.raises(ValueError, match="negative item -2"):
        run_jobs(_scaled, [1, -2, 3], 1, workers=2)


def test_workers_follow_the_cores_the_jobs_and_the_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("server.workers.usable_cpus", lambda: 2)
    cpu = torch.device("cpu")
    assert auto_workers(0, 8, cpu) == 2  # one per core
    assert auto_workers(0, 1, cpu) == 1  # one job runs here
    assert auto_workers(3, 8, cpu) == 3  # asked for explicitly
    assert auto_workers(4, 2, cpu) == 2  # never more than the jobs
    assert auto_workers(1, 8, cpu) == 1
    assert auto_workers(0, 8, torch.device("cuda")) == 1  # GPU work stays in one process
    with pytest.raises(ValueError, match="workers must be >= 0"):
        auto_workers(-1, 8, cpu)
