"""Worker pools: Ray actors on the cluster, or the same workers in this process.

Both pools have two methods the driver's experiments are written against:

* ``call(method, args_per_worker)`` runs a :class:`WorkerCore` method on every
  worker (in parallel on Ray) and returns the results in worker order;
* ``map_reduce(method, args_per_worker)`` runs a method that returns
  (figures, contribution) and sums the contributions pairwise among the
  workers (see :mod:`._reduce`): only the figures and one sum reach the
  driver, whatever the number of workers.

:class:`LocalPool` is how the tests check that the distributed results equal
what the same steps give in one process.
"""

from __future__ import annotations

import os
import time

import ray

from ._init import ClusterError
from ._reduce import combine, nbytes, tree
from ._worker import WorkerCore

READY_TIMEOUT = 120.0
# What a lost worker or node looks like to the driver: the actor died or is restarting, or an
# object it held (a contribution in the reduction) went with its node.
WORKER_LOST = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.ObjectLostError)


class LocalPool:
    """The workers as plain objects in this process, called one after another."""

    def __init__(self, workers):
        self.workers = list(workers)
        self.driver_bytes = 0

    def __len__(self):
        return len(self.workers)

    def call(self, method, args_per_worker):
        return [getattr(worker, method)(*args) for worker, args in zip(self.workers, args_per_worker)]

    def map_reduce(self, method, args_per_worker):
        pairs = self.call(method, args_per_worker)
        figures = [f for f, _ in pairs]
        total = tree([c for _, c in pairs], lambda i, a, b: combine(a, b))
        self.driver_bytes = nbytes(figures) + nbytes(total)  # what a driver would receive
        return figures, total

    def placement(self):
        return [{"name": f"local-{i}", "node_id": None, "gpu_ids": [], "pid": os.getpid()}
                for i in range(len(self.workers))]

    def shutdown(self):
        self.workers = []


class WorkerNeedsData(RuntimeError):
    """A worker actor was (re)started and has not been given its shard yet."""


class RayWorker:
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

    def where(self):
        """Where the actor runs: its node, the GPUs Ray gave it and what CUDA sees."""
        context = ray.get_runtime_context()
        return {"node_id": context.get_node_id(), "gpu_ids": [int(g) for g in ray.get_gpu_ids()],
                "pid": os.getpid(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


class RayPool:
    """Worker actors, one model or submodel each, on the GPU Ray gave them (or the CPU).

    ``data_refs``: (shard, test) object references per worker, kept alive so
    that a restarted actor gets its data again; ``placement_group``: the
    group reserving the workers' resources, removed at :meth:`shutdown`.
    """

    max_retries = 3

    def __init__(self, actors, names, comp_type, data_refs=(), placement_group=None,
                 restart_timeout=READY_TIMEOUT, experiment=None):
        self.actors = list(actors)
        self.experiment = experiment  # the tag of the workers' metrics (the driver's metrics carry it too)
        self.names = list(names)
        self.comp_type = comp_type
        self.placement_group = placement_group
        self.restart_timeout = restart_timeout
        self.retries = 0  # calls (or reductions) redone after a worker was lost
        self.driver_bytes = 0  # array bytes the driver received in the last map_reduce
        self._data_refs = list(data_refs)

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
            except WORKER_LOST as exc:
                losses[i] += 1
                if losses[i] > self.max_retries:
                    raise ClusterError(f"worker {self.names[i]} was lost {losses[i]} times in one call "
                                       f"of {method}") from exc
                self._revive(i, exc)
                self.retries += 1
            except ray.exceptions.RayTaskError as exc:
                if not isinstance(exc.cause, WorkerNeedsData):
                    raise
                self._attach(i)  # restarted between two calls
            pending[self.actors[i].run.remote(method, *args_per_worker[i])] = i
        return results

    def map_reduce(self, method, args_per_worker):
        """Run ``method`` (returning (figures, contribution)) everywhere; return (figures, summed contribution).

        The contributions are summed by the workers, pairwise through the
        object store; the driver receives the figures and the sum. If a worker
        or its node is lost anywhere in the round, the whole round is done
        again once Ray has restarted the workers: its arguments are the same,
        so is its result.
        """
        args_per_worker = _share(list(args_per_worker))
        for attempt in range(self.max_retries + 1):
            try:
                calls = [actor.run.options(num_returns=2).remote(method, *args)
                         for actor, args in zip(self.actors, args_per_worker)]
                figures = ray.get([f for f, _ in calls])
                root = tree([c for _, c in calls], lambda i, a, b: self.actors[i].run.remote("combine", a, b))
                total = ray.get(root)
                self.driver_bytes = nbytes(figures) + nbytes(total)
                return figures, total
            except (*WORKER_LOST, ray.exceptions.RayTaskError) as exc:
                if isinstance(exc, ray.exceptions.RayTaskError) and not isinstance(exc.cause, WorkerNeedsData):
                    raise
                if attempt == self.max_retries:
                    raise ClusterError(f"a round of {method} was interrupted {attempt + 1} times by lost "
                                       f"workers") from exc
                for i in range(len(self.actors)):
                    self._revive(i, exc)
                self.retries += 1
        raise AssertionError("unreachable")

    def placement(self):
        """One dict per worker: ``{"name", "node_id", "gpu_ids", "pid"}`` (and what CUDA sees)."""
        return [dict(ray.get(actor.where.remote()), name=name) for actor, name in zip(self.actors, self.names)]

    def _attach(self, i):
        shard, test = self._data_refs[i]
        return ray.get(self.actors[i].attach.remote(shard, test))

    def _revive(self, i, cause):
        """Block until actor i answers (Ray restarts it if it died) and holds its data, or raise ClusterError."""
        deadline = time.monotonic() + self.restart_timeout
        while True:
            try:
                info = ray.get(self.actors[i].ping.remote(), timeout=max(deadline - time.monotonic(), 1))
                if not info["attached"]:
                    self._attach(i)
                return
            except ray.exceptions.ActorDiedError as exc:
                raise ClusterError(f"worker {self.names[i]} died and Ray could not restart it "
                                   f"({cause.__class__.__name__}): {exc}") from exc
            except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError,
                    ray.exceptions.RayActorError) as exc:
                if time.monotonic() > deadline:
                    raise ClusterError(f"worker {self.names[i]} did not come back within "
                                       f"{self.restart_timeout:g} s: no node could take it (its resources: "
                                       f"{_resources_of(self, i)})") from exc
                time.sleep(0.5)

    def shutdown(self):
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.placement_group is not None:
            ray.util.remove_placement_group(self.placement_group)
            self.placement_group = None


def _resources_of(pool, i):
    if pool.placement_group is None:
        return "unknown"
    return pool.placement_group.bundle_specs[i]


def _share(args_per_worker):
    """Put an argument that every worker gets (the same object) into the object store once."""
    if len(args_per_worker) < 2:
        return args_per_worker
    shared = {}
    for position, value in enumerate(args_per_worker[0]):
        if isinstance(value, (dict, list)) and all(args[position] is value for args in args_per_worker):
            shared[position] = ray.put(value)
    return [tuple(shared.get(p, v) for p, v in enumerate(args)) for args in args_per_worker]
