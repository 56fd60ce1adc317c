"""Starting worker pools: shards of the data, and Ray actors placed on the cluster's nodes and GPUs.

A Ray pool reserves all its workers' resources at once in a placement group
(one bundle per worker), so it either gets every worker or fails fast with a
message saying what is missing. ``SPREAD`` (default) puts the workers on as
many nodes as it can, ``PACK`` on as few. A worker asking for a GPU sees only
its own (Ray sets ``CUDA_VISIBLE_DEVICES``); a fractional ``gpus_per_worker``
(0.5) lets two workers share one GPU. When a node is lost, Ray moves its
bundles to the nodes that remain (or one that joins) and restarts the actors
there; the pool redoes their part of the round.

The shards live in the driver's object store: the driver puts them there and
owns them, so the loss of a worker node loses no data; a restarted worker
fetches its shard again from the driver's node.
"""

from __future__ import annotations

import math
import time
import uuid

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from ..data import load_mnist
from ._init import ClusterError, is_local_mode
from ._pool import READY_TIMEOUT, LocalPool, RayPool, RayWorker
from ._worker import WorkerCore

PLACEMENT_TIMEOUT = 60.0
STRATEGIES = ("SPREAD", "PACK", "STRICT_SPREAD", "STRICT_PACK")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def shard_data(data, n):
    """n disjoint zero-copy training shards and the test split of ``data`` (MnistData; default MNIST)."""
    data = data or load_mnist()
    if not isinstance(n, int) or isinstance(n, bool) or n < 1 or n > len(data.train):
        raise ValueError(f"the number of workers must be an integer in [1, {len(data.train)}], got {n!r}")
    return data.train.shard(n), data.test


def local_workers(n, seed, data=None, experiment="experiment"):
    """A :class:`LocalPool` of n workers over n shards of ``data`` (the in-process reference)."""
    shards, test = shard_data(data, n)
    return LocalPool(WorkerCore(shard, test, seed, i, "CPU", experiment) for i, shard in enumerate(shards))


def ray_workers(n, seed, data=None, experiment="experiment", role="trainer", cpus_per_worker=1,
                gpus_per_worker=None, comp_type=None, strategy="SPREAD", max_restarts=3,
                restart_timeout=READY_TIMEOUT, placement_timeout=PLACEMENT_TIMEOUT, placement_group="auto"):
    """A :class:`RayPool` of n actors, each holding one shard of ``data`` from the object store.

    Each actor gets ``cpus_per_worker`` CPUs (and as many threads for BLAS and
    Numba) and ``gpus_per_worker`` GPUs (default: one where the cluster has
    GPUs, none in local mode). ``comp_type``: 'GPU' (CuPy, the default for a
    worker with a GPU) or 'CPU' (NumPy; how GPU placement is tested on a
    machine without one). ``strategy``: how the placement group spreads the
    workers over nodes (see the module docstring). Actor names,
    ``<experiment>/<role>/shard-<i>-<run>``, tell in the dashboard what each
    serves. A restarted worker that is not back within ``restart_timeout``
    seconds fails the experiment with :class:`ClusterError`.

    ``placement_group``: ``"auto"`` (default) places the workers in the
    placement group of the task or actor calling this, when it runs in one
    (a Ray Tune trial reserved with a ``PlacementGroupFactory`` of one bundle
    for its driver and one per worker: the workers take bundles 1..n), and
    else reserves a new group; None always reserves a new group; or a
    placement group whose last n bundles the workers take.
    """
    if not ray.is_initialized():
        raise ClusterError("Ray is not running: call sparana.cluster.init() first")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    shards, test = shard_data(data, n)
    if gpus_per_worker is None:
        gpus_per_worker = 0 if is_local_mode() or ray.cluster_resources().get("GPU", 0) < 1 else 1
    comp_type = _comp_type(comp_type, gpus_per_worker)
    bundle = {"CPU": float(cpus_per_worker)}
    if gpus_per_worker:
        bundle["GPU"] = float(gpus_per_worker)
    group, first, owned = _group(placement_group, n, bundle, strategy, placement_timeout)
    threads = str(max(int(cpus_per_worker), 1))
    env = {name: threads for name in THREAD_VARIABLES}
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    # The driver puts the shards into its own node's object store and owns them: they outlive any worker.
    test_ref = ray.put(test.table)
    run = uuid.uuid4().hex[:6]
    remote = ray.remote(RayWorker)
    actors, names, refs = [], [], []
    for i, shard in enumerate(shards):
        name = f"{experiment}/{role}/shard-{i}-{run}"
        refs.append((ray.put(shard.table), test_ref))
        actor = remote.options(
            name=name, num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=max_restarts,
            max_task_retries=0, runtime_env={"env_vars": env},
            scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=first + i),
        ).remote(seed, i, comp_type, experiment, role)
        actors.append(actor)
        names.append(name)
    pool = RayPool(actors, names, comp_type, refs, group if owned else None, restart_timeout, experiment)
    try:
        _wait_ready([actor.attach.remote(*data) for actor, data in zip(actors, refs)], names)
    except BaseException:
        pool.shutdown()
        raise
    return pool


def _comp_type(comp_type, gpus_per_worker):
    if comp_type is None:
        return "GPU" if gpus_per_worker and not is_local_mode() else "CPU"
    if not isinstance(comp_type, str) or comp_type.upper() not in ("CPU", "GPU"):
        raise ValueError(f"comp_type must be 'CPU', 'GPU' or None, got {comp_type!r}")
    if comp_type.upper() == "GPU" and not gpus_per_worker:
        raise ValueError("comp_type='GPU' needs gpus_per_worker > 0")
    return comp_type.upper()


def _group(placement_group, n, bundle, strategy, timeout):
    """(group, index of the workers' first bundle, whether the pool owns the group)."""
    if isinstance(placement_group, str) and placement_group == "auto":
        placement_group = ray.util.get_current_placement_group()
        if placement_group is not None and len(placement_group.bundle_specs) < n + 1:
            placement_group = None  # the caller's group has no room for the workers: reserve our own
    if placement_group is None:
        return _reserve(n, bundle, strategy, timeout), 0, True
    bundles = placement_group.bundle_specs
    if len(bundles) < n:
        raise ClusterError(f"{n} workers need {n} bundles of the placement group given, which has {len(bundles)}")
    return placement_group, len(bundles) - n, False


def _reserve(n, bundle, strategy, timeout):
    """A ready placement group of n ``bundle``s, or ClusterError saying what is missing."""
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    fits = sum(_bundles_fitting(node.get("Resources", {}), bundle) for node in nodes)
    if fits < n:
        totals = {kind: sum(node.get("Resources", {}).get(kind, 0) for node in nodes) for kind in bundle}
        raise ClusterError(f"{n} workers need {n} x {_show(bundle)} (each on one node); the cluster's "
                           f"{len(nodes)} node(s) hold {fits} such (in all {_show(totals)})")
    group = placement_group([dict(bundle) for _ in range(n)], strategy=strategy)
    start = time.monotonic()
    ready, _ = ray.wait([group.ready()], timeout=timeout)
    if not ready:
        remove_placement_group(group)
        free = ray.available_resources()
        raise ClusterError(f"{n} workers of {_show(bundle)} could not be placed ({strategy}) within "
                           f"{time.monotonic() - start:.0f} s: other work holds the resources "
                           f"(free now: {_show({k: free.get(k, 0) for k in bundle})})")
    return group


def _bundles_fitting(resources, bundle):
    return min(math.floor(resources.get(kind, 0) / amount + 1e-9) for kind, amount in bundle.items() if amount > 0) \
        if any(amount > 0 for amount in bundle.values()) else math.inf


def _show(resources):
    return "{" + ", ".join(f"{kind}: {amount:g}" for kind, amount in resources.items()) + "}"


def _wait_ready(calls, names, timeout=READY_TIMEOUT):
    start = time.monotonic()
    pending = dict(zip(calls, names))
    ready, waiting = ray.wait(list(pending), num_returns=len(pending), timeout=timeout)
    if waiting:
        missing = ", ".join(pending[ref] for ref in waiting)
        raise ClusterError(f"workers not ready after {time.monotonic() - start:.0f} s: {missing}")
    ray.get(ready)
