"""samplecnn.workers: the CPU count, the start-method rule, and the pool that prepare and teach share."""

import os

import pytest

from samplecnn import workers
from samplecnn.errors import SampleCNNError


def test_usable_cpus_follows_the_affinity_mask_then_the_cpu_count(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert workers.usable_cpus() == 2  # a container or taskset allows fewer than the machine has
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    assert workers.usable_cpus() == 64
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert workers.usable_cpus() == 1


def test_start_method_rule():
    spawn = workers.context(runs_torch=True).get_start_method()
    assert spawn == "spawn"
    assert workers.context(runs_torch=False, started_late=True).get_start_method() == "spawn"
    import multiprocessing

    expected = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    assert workers.context(runs_torch=False).get_start_method() == expected


def _square(x):
    return x * x


def _pid_and(x):
    return os.getpid(), x


def _die(x):
    if x == 3:
        os._exit(1)
    return x


@pytest.mark.parametrize("n", [1, 2])
def test_pool_keeps_job_order_in_or_out_of_process(n):
    with workers.Pool(_square, range(20), n, ahead=2, runs_torch=False, broken="x") as results:
        assert list(results) == [x * x for x in range(20)]


def test_pool_runs_in_worker_processes_and_as_completed():
    with workers.Pool(_pid_and, range(10), 2, ahead=1, runs_torch=False, broken="x", ordered=False) as results:
        got = list(results)
    assert sorted(x for _, x in got) == list(range(10))
    assert os.getpid() not in {pid for pid, _ in got}


def test_pool_in_process_uses_the_local_factory_once():
    made = []

    def factory():
        made.append(1)
        return _square

    with workers.Pool(_pid_and, range(4), 1, ahead=2, runs_torch=False, broken="x", local=factory) as results:
        assert list(results) == [0, 1, 4, 9]
    assert made == [1]


def test_a_dead_worker_is_one_line():
    with pytest.raises(SampleCNNError, match="a worker died"):
        with workers.Pool(_die, range(8), 2, ahead=1, runs_torch=False, broken="a worker died") as results:
            list(results)
