"""Worker pools: Ray actors on the cluster, or the same workers in this process.

Both pools have one method, ``call(method, args_per_worker)``, which runs a
:class:`WorkerCore` method on every worker (in parallel on Ray) and returns
the results in worker order. The driver's experiments are written once
against it; :class:`LocalPool` is how the tests check that the distributed
results equal what the same steps give in one process.
"""

from __future__ import annotations

import os
import time
import uuid

import ray

from ..data import load_mnist
from ._init import ClusterError, is_local_mode
from ._worker import WorkerCore

READY_TIMEOUT = 120.0
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


class LocalPool:
    """The workers as plain objects in this process, called one after another."""

    def __init__(self, workers):
        self.workers = list(workers)

    def __len__(self):
        return len(self.workers)

    def call(self, method, args_per_worker):
        return [getattr(worker, method)(*args) for worker, args in zip(self.workers, args_per_worker)]

    def shutdown(self):
        self.workers = []


class WorkerNeedsData(RuntimeError):
    """A worker actor was (re)started and has not been given its shard yet."""


class _RayWorker:
    """A :class:`WorkerCore` in a Ray actor, built when its shard and test set arrive by :meth:`attach`.

    The data come by a method call, not as constructor arguments: Ray warns
    (at error level) about actors whose constructor arguments live in the
    object store, since a restart needs them. A restarted actor has no data
    until the pool attaches them again, which it does whenever a call answers
    :class:`WorkerNeedsData`.
    """

    def __init__(self, *args, **kwargs):
        self._args, self._kwargs = args, kwargs
        self.core = None

    def attach(self, shard, test):
        self.core = WorkerCore(shard, test, *self._args, **self._kwargs)
        return self.core.ping()

    def run(self, method, *args):
        if self.core is None:
            raise WorkerNeedsData("this worker was (re)started and holds no shard yet")
        return getattr(self.core, method)(*args)

    def ping(self):
        return {"pid": os.getpid(), "attached": self.core is not None}


class RayPool:
    """Worker actors, one model or submodel each, on the GPU Ray gave them (or the CPU)."""

    max_retries = 3

    def __init__(self, actors, names, comp_type, data_refs=(), experiment=None):
        self.actors = list(actors)
        self.experiment = experiment  # the tag of the workers' metrics (the driver's metrics carry it too)
        self.names = list(names)
        self.comp_type = comp_type
        self.retries = 0  # calls redone after a worker was lost
        self._data_refs = list(data_refs)  # (shard, test) per worker, kept alive for restarted actors

    def __len__(self):
        return len(self.actors)

    def call(self, method, args_per_worker):
        """Run ``method`` on every actor; redo the call of an actor that died once Ray has restarted it.

        The arguments (a round's starting weights and round number) are the
        same on the retry, so the result is the one an undisturbed call gives.
        An actor that cannot be brought back raises :class:`ClusterError`.
        """
        args_per_worker = _share(list(args_per_worker))
        pending = {actor.run.remote(method, *args): i for i, (actor, args) in enumerate(zip(self.actors, args_per_worker))}
        results, losses = [None] * len(self.actors), [0] * len(self.actors)
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ref)
            try:
                results[i] = ray.get(ref)
                continue
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                losses[i] += 1
                if losses[i] > self.max_retries:
                    raise ClusterError(f"worker {self.names[i]} was lost {losses[i]} times in one call "
                                       f"of {method}") from exc
                self._wait_restarted(i, exc)
                self.retries += 1
            except ray.exceptions.RayTaskError as exc:
                if not isinstance(exc.cause, WorkerNeedsData):
                    raise
                self._attach(i)  # restarted between two calls
            pending[self.actors[i].run.remote(method, *args_per_worker[i])] = i
        return results

    def _attach(self, i):
        shard, test = self._data_refs[i]
        return ray.get(self.actors[i].attach.remote(shard, test))

    def _wait_restarted(self, i, cause):
        """Block until actor i answers again (Ray restarts it), or raise ClusterError."""
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                ray.get(self.actors[i].ping.remote(), timeout=max(deadline - time.monotonic(), 1))
                self._attach(i)
                return
            except ray.exceptions.ActorDiedError as exc:
                raise ClusterError(f"worker {self.names[i]} died and Ray could not restart it "
                                   f"({cause.__class__.__name__}): {exc}") from exc
            except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise ClusterError(f"worker {self.names[i]} did not come back within "
                                       f"{READY_TIMEOUT:.0f} s") from exc
                time.sleep(0.5)

    def shutdown(self):
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []


def _share(args_per_worker):
    """Put an argument that every worker gets (the same object) into the object store once."""
    if len(args_per_worker) < 2:
        return args_per_worker
    shared = {}
    for position, value in enumerate(args_per_worker[0]):
        if isinstance(value, (dict, list)) and all(args[position] is value for args in args_per_worker):
            shared[position] = ray.put(value)
    return [tuple(shared.get(p, v) for p, v in enumerate(args)) for args in args_per_worker]


def shard_data(data, n):
    """n disjoint zero-copy training shards and the test split of ``data`` (MnistData; default MNIST)."""
    data = data or load_mnist()
    if not isinstance(n, int) or n < 1 or n > len(data.train):
        raise ValueError(f"the number of workers must be an integer in [1, {len(data.train)}], got {n!r}")
    return data.train.shard(n), data.test


def local_workers(n, seed, data=None, experiment="experiment"):
    """A :class:`LocalPool` of n workers over n shards of ``data`` (the in-process reference)."""
    shards, test = shard_data(data, n)
    return LocalPool(WorkerCore(shard, test, seed, i, "CPU", experiment) for i, shard in enumerate(shards))


def ray_workers(n, seed, data=None, experiment="experiment", role="trainer", cpus_per_worker=1,
                gpus_per_worker=None, max_restarts=3):
    """A :class:`RayPool` of n actors, each holding one shard of ``data`` from the object store.

    Each actor gets ``cpus_per_worker`` CPUs (and as many threads for BLAS and
    Numba) and, unless in local mode or the cluster has no GPUs, one GPU
    (``gpus_per_worker`` overrides), on which it runs CuPy. Actor names,
    ``<experiment>/<role>/shard-<i>``, tell in the dashboard what each serves.
    Raises :class:`ClusterError` at once when the cluster cannot place them.
    """
    if not ray.is_initialized():
        raise ClusterError("Ray is not running: call sparana.cluster.init() first")
    shards, test = shard_data(data, n)
    resources = ray.cluster_resources()
    if gpus_per_worker is None:
        gpus_per_worker = 0 if is_local_mode() or resources.get("GPU", 0) < 1 else 1
    needs = {"CPU": n * cpus_per_worker, "GPU": n * gpus_per_worker}
    for kind, amount in needs.items():
        if amount > resources.get(kind, 0):
            raise ClusterError(f"{n} workers need {amount:g} {kind}s ({cpus_per_worker if kind == 'CPU' else gpus_per_worker:g} "
                               f"each) but the cluster has {resources.get(kind, 0):g}")
    comp_type = "GPU" if gpus_per_worker else "CPU"
    threads = str(max(int(cpus_per_worker), 1))
    env = {name: threads for name in THREAD_VARIABLES}
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    # The driver puts the shards into its own node's object store and owns them: they outlive any worker.
    test_ref = ray.put(test.table)
    run = uuid.uuid4().hex[:6]
    remote = ray.remote(_RayWorker)
    actors, names, refs = [], [], []
    for i, shard in enumerate(shards):
        name = f"{experiment}/{role}/shard-{i}-{run}"
        refs.append((ray.put(shard.table), test_ref))
        actor = remote.options(name=name, num_cpus=cpus_per_worker, num_gpus=gpus_per_worker,
                               max_restarts=max_restarts, max_task_retries=0,
                               runtime_env={"env_vars": env}).remote(seed, i, comp_type, experiment, role)
        actors.append(actor)
        names.append(name)
    _wait_ready([actor.attach.remote(*data) for actor, data in zip(actors, refs)], names)
    return RayPool(actors, names, comp_type, refs, experiment)


def _wait_ready(calls, names, timeout=READY_TIMEOUT):
    start = time.monotonic()
    pending = dict(zip(calls, names))
    ready, waiting = ray.wait(list(pending), num_returns=len(pending), timeout=timeout)
    if waiting:
        missing = ", ".join(pending[ref] for ref in waiting)
        raise ClusterError(f"workers not ready after {time.monotonic() - start:.0f} s: {missing}")
    ray.get(ready)

