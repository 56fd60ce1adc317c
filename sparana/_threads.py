"""How many threads the CPU kernels and BLAS run on: the CPUs this process may use and nobody else uses.

A worker rarely has the machine to itself. A parallel kernel splits its work
evenly between its threads, so it ends when its slowest thread does: when
another busy process takes one of two cores, the thread that shares that core
gets half of it, or waits a whole time slice of the scheduler (milliseconds)
before it runs at all, and every kernel of a few hundred microseconds takes
milliseconds. One thread on the free core is then faster than two.

So the kernels ask :func:`threads_for` how many threads to use:

* never more than the CPUs of the process's affinity mask
  (``os.sched_getaffinity``: a worker keeps to the CPUs it was given), nor
  than Numba's thread pool;
* less the CPUs that other processes keep busy, measured every
  :data:`WINDOW` seconds from ``/proc/stat`` (the busy time of those CPUs less
  this process's own CPU time); niced processes do not count (unless this
  one is niced too): they give their CPU back at once;
* and never more than the work pays for (one thread per
  ``work_per_thread`` units).

BLAS follows the same count (through threadpoolctl), capped by the thread
count it started with and by :func:`single_threaded_blas`.

Threads that wait spin only a short while before they sleep (OpenMP's
``GOMP_SPINCOUNT``, set before Numba starts its pool, see
:mod:`sparana.kernels.cpu`): long enough for the back-to-back kernels of a
training step (waking a sleeping thread costs tens of microseconds on a
virtual machine: a step of the 95% model took 2.0 ms with passive waiting
against 1.4 ms with the short spin), too short to take a core for long from a
thread that was descheduled, which the count above makes rare anyway.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import math
import os
import threading
import time

# Seconds between two looks at how busy the machine is (/proc/stat counts in
# hundredths of a second, so a shorter window would mostly measure rounding).
WINDOW = 0.1


def _affinity():
    try:
        cpus = os.sched_getaffinity(0)
        return len(cpus), sorted(cpus)
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1, None


def _busy_seconds(cpus, count_nice):
    """CPU seconds spent busy so far on ``cpus`` (all when None), from /proc/stat; None if unreadable."""
    try:
        with open("/proc/stat", "rb") as f:
            text = f.read().decode()
    except OSError:
        return None
    wanted = None if cpus is None else {f"cpu{c}" for c in cpus}
    ticks = 0
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *fields = line.split()
        if wanted is not None and name not in wanted:
            continue
        # user nice system idle iowait irq softirq steal: all but idle and iowait are busy
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
        ticks += user + system + irq + softirq + steal + (nice if count_nice else 0)
    return ticks / _ticks_per_second()


@functools.lru_cache(maxsize=None)
def _ticks_per_second():
    return os.sysconf("SC_CLK_TCK")


class _Machine:
    """The last look at the machine and the thread counts chosen from it."""

    def __init__(self):
        self.checked = -math.inf
        self.sample = None  # (time, cpus, busy seconds, own CPU seconds)
        self.usable = _affinity()[0]
        self.blas_caps = []  # caps from single_threaded_blas contexts, innermost last
        self.blas_now = None  # the BLAS thread count this module set last

    def refresh(self, now):
        count, cpus = _affinity()
        niced = _niceness() > 0
        busy = _busy_seconds(cpus, count_nice=niced)
        own = time.process_time()
        usable = count
        if busy is not None and self.sample is not None and self.sample[1] == cpus:
            elapsed = now - self.sample[0]
            others = ((busy - self.sample[2]) - (own - self.sample[3])) / elapsed
            usable = min(max(count - math.floor(others + 0.5), 1), count)
        self.checked = now
        self.sample = (now, cpus, busy, own)
        if usable != self.usable:
            self.usable = usable
            self.apply_blas()

    def apply_blas(self):
        blas = _blas()
        if blas is None:
            return
        target = min(_blas_default(), self.usable, *self.blas_caps)
        if target != self.blas_now:
            blas.limit(limits=target)
            self.blas_now = target


def _niceness():
    try:
        return os.getpriority(os.PRIO_PROCESS, 0)
    except (AttributeError, OSError):
        return 0


_MACHINE = _Machine()


class _ThreadFlag(threading.local):
    """Set in the threads of map_on_cores: each of their kernel calls runs on its own thread."""

    active = False  # (a class default: a missing attribute of a thread-local costs an exception, 0.3 us)


_ONE_THREAD = _ThreadFlag()


def usable_cpus():
    """CPUs this process may use that no other busy process holds (at least 1), refreshed every WINDOW s."""
    now = time.monotonic()
    if now - _MACHINE.checked >= WINDOW:
        _MACHINE.refresh(now)
    return _MACHINE.usable


def threads_for(work, work_per_thread, limit=None):
    """Threads for a call with ``work`` units: the usable CPUs, and one per ``work_per_thread`` units
    begun (0: no such limit; infinite: one thread). ``limit`` (Numba's pool size) caps it too.
    Always one in a thread of :func:`map_on_cores`."""
    if _ONE_THREAD.active:
        return 1
    threads = usable_cpus()
    if limit is not None:
        threads = min(threads, limit)
    if work_per_thread > 0:
        threads = min(threads, max(1, math.ceil(work / work_per_thread)))  # (infinite: work / inf = 0, one thread)
    return max(threads, 1)


@functools.lru_cache(maxsize=None)
def _blas():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # then BLAS keeps its threads
        return None
    controller = ThreadpoolController().select(user_api="blas")
    return controller if controller.lib_controllers else None


@functools.lru_cache(maxsize=None)
def _blas_default():
    """BLAS's thread count before this module changed it: never exceeded."""
    return max(min(info["num_threads"] for info in _blas().info()), 1)


@contextlib.contextmanager
def _blas_cap(threads):
    _MACHINE.blas_caps.append(threads)
    _MACHINE.apply_blas()
    try:
        yield
    finally:
        _MACHINE.blas_caps.pop()
        _MACHINE.apply_blas()


def single_threaded_blas(active=True):
    """A context in which BLAS runs on one thread (a no-op when ``active`` is false).

    A model with sparse layers spends its time in Numba's parallel kernels; BLAS's
    threads would only wait, spinning, beside them for its small dense layers.
    """
    if not active or _blas() is None:
        return contextlib.nullcontext()
    return _blas_cap(1)


def core_threads():
    """Threads that work shared out by :func:`map_on_cores` would run on now: the usable CPUs, no
    more than Numba's pool (a Ray worker's share of the CPUs); 1 inside such a thread."""
    import numba  # (here, not at the top: this module's thread counts are for BLAS too)

    return threads_for(1, 0, limit=numba.config.NUMBA_NUM_THREADS)


def map_on_cores(function, items):
    """[function(item) for item in items], the items shared out between :func:`core_threads` threads.

    In those threads every kernel runs on one thread (:func:`threads_for`), so each core works on
    whole items and keeps what it computes in its own cache. The items are taken in turn as threads
    come free; the results are in the items' order. One thread, or one item: a plain loop (so also
    when called from one of those threads). The first error raised by an item is raised here, once
    every thread has stopped: no item starts after it. ``function`` must be safe to run on several
    items at once (it runs without the GIL in kernels).
    """
    items = list(items)
    threads = min(core_threads(), len(items))
    if threads <= 1:
        return [function(item) for item in items]
    results = [None] * len(items)
    errors = []
    stop = threading.Event()
    turns = iter(range(len(items)))
    lock = threading.Lock()

    def work():
        _ONE_THREAD.active = True
        try:
            while not stop.is_set():
                with lock:
                    i = next(turns, None)
                if i is None:
                    return
                try:
                    results[i] = function(items[i])
                except BaseException as exc:
                    errors.append(exc)
                    stop.set()
        finally:
            _ONE_THREAD.active = False

    futures = [_pool.submit(threads, work) for _ in range(threads)]
    try:
        concurrent.futures.wait(futures)
    finally:  # (after an interrupt of the caller too, no item starts)
        stop.set()
    if errors:
        raise errors[0]
    return results


class _Pool:
    """One thread pool for map_on_cores, grown (never shrunk) to the most threads a call asked for."""

    def __init__(self):
        self.lock = threading.Lock()
        self.executor = None
        self.size = 0

    def submit(self, threads, function):
        """Run ``function`` in a pool of at least ``threads`` threads."""
        with self.lock:
            if threads > self.size:
                if self.executor is not None:
                    self.executor.shutdown(wait=False)  # its threads end once their work (if any) is done
                self.executor = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="sparana-cores")
                self.size = threads
            return self.executor.submit(function)

    def forget(self):
        """In a forked child: the parent's threads are not here, so the next call starts a new pool."""
        self.lock = threading.Lock()
        self.executor, self.size = None, 0


_pool = _Pool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_pool.forget)
