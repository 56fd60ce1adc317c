"""Thread selection: the usable CPUs (affinity less other processes' load), work sizing, BLAS caps."""

import os
import signal
import threading
import time

import numba
import numpy as np
import pytest

from sparana import _threads


@pytest.fixture
def machine(monkeypatch):
    """A fresh _Machine on two CPUs whose /proc/stat and process CPU time the test sets."""
    state = {"busy": 0.0, "own": 0.0, "now": 100.0, "cpus": [0, 1]}
    monkeypatch.setattr(_threads, "_affinity", lambda: (len(state["cpus"]), state["cpus"]))
    monkeypatch.setattr(_threads, "_busy_seconds", lambda cpus, count_nice: state["busy"])
    monkeypatch.setattr(_threads.time, "process_time", lambda: state["own"])
    monkeypatch.setattr(_threads, "_blas", lambda: None)
    fresh = _threads._Machine()
    monkeypatch.setattr(_threads, "_MACHINE", fresh)

    def advance(seconds, busy, own):
        state["now"] += seconds
        state["busy"] += busy
        state["own"] += own
        fresh.refresh(state["now"])
        return fresh.usable

    state["advance"] = advance
    return state


def test_other_processes_load_takes_cpus_away(machine):
    advance = machine["advance"]
    assert advance(0.1, 0.0, 0.0) == 2  # first look: every CPU of the affinity mask
    assert advance(0.1, 0.2, 0.2) == 2  # only this process runs
    assert advance(0.1, 0.14, 0.1) == 2  # a little load elsewhere (under half a CPU) is ignored
    assert advance(0.1, 0.2, 0.1) == 1  # another process keeps a core busy
    assert advance(0.1, 0.3, 0.0) == 1  # never fewer than one
    assert advance(0.1, 0.1, 0.1) == 2  # it went away


def test_a_new_affinity_mask_starts_over(machine):
    advance = machine["advance"]
    advance(0.1, 0.0, 0.0)
    assert advance(0.1, 0.12, 0.1) == 2
    machine["cpus"] = [0, 1, 2, 3]
    assert advance(0.1, 0.4, 0.0) == 4  # no comparable sample yet for the new mask
    assert advance(0.1, 0.4, 0.2) == 2


def test_usable_cpus_looks_again_only_after_the_window(machine, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(_threads.time, "monotonic", lambda: now[0])
    calls = []

    def refresh(t):
        calls.append(t)
        _threads._MACHINE.checked = t

    monkeypatch.setattr(_threads._MACHINE, "refresh", refresh)
    _threads.usable_cpus()
    now[0] += _threads.WINDOW / 2
    _threads.usable_cpus()
    assert len(calls) == 1


def test_threads_follow_the_work(monkeypatch):
    monkeypatch.setattr(_threads, "usable_cpus", lambda: 8)
    assert _threads.threads_for(10, 100) == 1
    assert _threads.threads_for(100, 100) == 1
    assert _threads.threads_for(101, 100) == 2
    assert _threads.threads_for(10**9, 100) == 8
    assert _threads.threads_for(10**9, 100, limit=3) == 3
    assert _threads.threads_for(10, 0) == 8  # no sizing
    assert _threads.threads_for(10**9, float("inf")) == 1


def test_busy_seconds_reads_proc_stat():
    busy = _threads._busy_seconds(None, count_nice=False)
    if busy is None:
        pytest.skip("no /proc/stat here")
    assert busy > 0 and _threads._busy_seconds(None, count_nice=True) >= busy


def test_single_threaded_blas_caps_and_restores():
    blas = _threads._blas()
    if blas is None:
        pytest.skip("threadpoolctl sees no BLAS")
    before = [info["num_threads"] for info in blas.info()]
    with _threads.single_threaded_blas():
        assert all(info["num_threads"] == 1 for info in blas.info())
        np.ones((64, 64)) @ np.ones((64, 64))
    assert [info["num_threads"] for info in blas.info()] == before
    with _threads.single_threaded_blas(active=False):
        assert [info["num_threads"] for info in blas.info()] == before


def test_map_on_cores_shares_the_items_out_and_keeps_their_order(monkeypatch):
    monkeypatch.setattr(_threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 2)  # (whatever this machine has)
    names, sizes = set(), []
    both_running = threading.Barrier(2, timeout=10)

    def work(item):
        names.add(threading.current_thread().name)
        sizes.append(_threads.threads_for(10**9, 1))  # kernels here run on one thread
        if item < 2:
            both_running.wait()  # the first two items run at once, on two threads
        return item * item

    assert _threads.map_on_cores(work, range(7)) == [i * i for i in range(7)]
    assert len(names) == 2 and threading.current_thread().name not in names
    assert sizes == [1] * 7
    assert _threads.threads_for(10**9, 1) == 2  # and the caller's kernels are left as they were
    assert _threads.map_on_cores(lambda item: _threads.map_on_cores(abs, [-item]), [1, 2]) == [[1], [2]]


def test_map_on_cores_runs_inline_on_one_cpu_and_raises_what_an_item_raised(monkeypatch):
    here = [threading.current_thread().name] * 2
    monkeypatch.setattr(_threads, "usable_cpus", lambda: 1)
    assert _threads.map_on_cores(lambda item: threading.current_thread().name, [0, 1]) == here
    monkeypatch.setattr(_threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 1)  # a worker given one CPU
    assert _threads.map_on_cores(lambda item: threading.current_thread().name, [0, 1]) == here
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 2)

    def fails_on_three(item):
        if item == 3:
            raise ValueError("item 3")
        return item

    with pytest.raises(ValueError, match="item 3"):
        _threads.map_on_cores(fails_on_three, range(6))


def test_map_on_cores_starts_no_item_after_an_error(monkeypatch):
    monkeypatch.setattr(_threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 2)
    started = []

    def work(item):
        started.append(item)
        if item == 0:
            raise ValueError("item 0")
        time.sleep(0.05)

    with pytest.raises(ValueError, match="item 0"):
        _threads.map_on_cores(work, range(20))
    time.sleep(0.3)  # (time for six more items, had the other thread gone on)
    assert 0 in started and set(started) <= {0, 1}  # the other thread took one item at most


def test_map_on_cores_keeps_one_pool_of_the_most_threads_asked(monkeypatch):
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 8)
    for usable in (2, 3, 2, 3, 2):
        monkeypatch.setattr(_threads, "usable_cpus", lambda: usable)
        all_running = threading.Barrier(usable, timeout=10)  # (so that each call runs that many threads)
        assert _threads.map_on_cores(lambda item: (all_running.wait(), item)[1], range(usable)) == list(range(usable))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # (the threads of a replaced pool end soon after)
        pool_threads = [t for t in threading.enumerate() if t.name.startswith("sparana-cores")]
        if len(pool_threads) <= 3:
            break
        time.sleep(0.05)
    assert len(pool_threads) <= 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_map_on_cores_works_in_a_forked_child(monkeypatch):
    monkeypatch.setattr(_threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 2)
    both_running = threading.Barrier(2, timeout=10)
    assert _threads.map_on_cores(lambda item: (both_running.wait(), item)[1], [1, 2]) == [1, 2]  # two threads now
    child = os.fork()
    if child == 0:  # a pool whose threads stayed in the parent would never answer
        signal.alarm(20)  # (then this kills the child)
        os._exit(0 if _threads.map_on_cores(abs, [-3, -4]) == [3, 4] else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
