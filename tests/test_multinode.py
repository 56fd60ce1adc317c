"""A multi-node GPU cluster simulated on this machine: placement, a node lost mid-round, no node left.

The nodes declare GPUs this machine does not have (``num_gpus=2``): Ray schedules them, sets
``CUDA_VISIBLE_DEVICES`` and restarts actors exactly as on a GPU cluster, while the workers compute
with NumPy (``comp_type="CPU"``).
"""

import collections
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")

import sparana as sa  # noqa: E402
from sparana import cluster  # noqa: E402
from sparana.cluster._simulate import SimulatedCluster  # noqa: E402
from sparana.data import MnistData  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def small():
    mnist = sa.load_mnist()
    return MnistData(mnist.train.slice(0, 1200), mnist.test.slice(0, 300))


@pytest.fixture
def simulated(ray_environment):
    """A head without GPUs; each test adds its worker nodes."""
    nodes = SimulatedCluster(temp_dir=ray_environment.folder)
    try:
        cluster.init(address=nodes.address)
        yield nodes
    finally:
        cluster.shutdown()
        nodes.shutdown()


def model(seed=0):
    model = sa.Model(784, [sa.DenseReluLayer(32), sa.DenseReluLayer(16), sa.DenseLinearLayer(10)],
                     comp_type="CPU", seed=seed, dtype="float64")
    model.initialize_weights("Xavier", bias_constant=0.1)
    return model


def test_workers_land_one_per_gpu_across_nodes_and_share_fractional_gpus(simulated, small):
    gpu_nodes = {simulated.add_node(num_cpus=2, num_gpus=2).node_id for _ in range(2)}
    pool = cluster.ray_workers(4, seed=0, data=small, cpus_per_worker=0.25, gpus_per_worker=1, comp_type="CPU")
    try:
        placement = pool.placement()
    finally:
        pool.shutdown()
    pairs = [(p["node_id"], tuple(p["gpu_ids"])) for p in placement]
    assert len(set(pairs)) == 4 and {node for node, _ in pairs} == gpu_nodes, placement
    for p in placement:
        assert len(p["gpu_ids"]) == 1 and p["cuda_visible_devices"] == str(p["gpu_ids"][0]), p
        assert set(p) >= {"name", "node_id", "gpu_ids", "pid"}
    assert len({p["pid"] for p in placement}) == 4

    pool = cluster.ray_workers(4, seed=0, data=small, cpus_per_worker=0.25, gpus_per_worker=0.5, comp_type="CPU",
                               strategy="PACK")
    try:
        shared = collections.Counter((p["node_id"], tuple(p["gpu_ids"])) for p in pool.placement())
    finally:
        pool.shutdown()
    assert sorted(shared.values()) == [2, 2], shared  # two workers on each GPU they use

    start = time.monotonic()
    with pytest.raises(cluster.ClusterError, match=r"5 workers need 5 x \{CPU: 0.25, GPU: 1\}.*hold 4 such"):
        cluster.ray_workers(5, seed=0, data=small, cpus_per_worker=0.25, gpus_per_worker=1, comp_type="CPU")
    assert time.monotonic() - start < 10


class RemoveNodeOnSubmit:
    """Stands in for worker i's actor handle: once its training call is sent, its node is removed."""

    def __init__(self, simulated, pool, i):
        self.simulated, self.pool, self.i, self.actor = simulated, pool, i, pool.actors[i]
        self.node = simulated.node_of(pool.placement()[i]["node_id"])
        self.fired = False
        pool.actors[i] = self

    def __getattr__(self, name):
        attribute = getattr(self.actor, name)
        if name != "run" or self.fired:
            return attribute
        outer = self

        class Method:
            def __init__(self, method):
                self.method = method

            def options(self, **options):
                return Method(self.method.options(**options))

            def remote(self, method, *args):
                reference = self.method.remote(method, *args)
                if method == "train_contribution":
                    outer.fired = True
                    outer.simulated.remove_node(outer.node)
                return reference

        return Method(attribute)

    def restore(self):
        self.pool.actors[self.i] = self.actor


def test_a_node_lost_mid_round_costs_nothing(simulated, small):
    for _ in range(3):  # two nodes for the workers, one spare
        simulated.add_node(num_cpus=1, num_gpus=1)
    options = dict(rounds=2, local_steps=4, mix="importance", test=small.test, progress=False, seed=2,
                   settings={"batch_size": 32}, statistics_samples=100)
    pool = cluster.ray_workers(2, seed=2, data=small, cpus_per_worker=0.5, gpus_per_worker=1, comp_type="CPU")
    try:
        before = pool.placement()
        loss = RemoveNodeOnSubmit(simulated, pool, 0)
        result = cluster.train_and_mix(model(), pool, **options)
        loss.restore()
        after = pool.placement()
    finally:
        pool.shutdown()
    assert loss.fired and pool.retries >= 1
    assert after[0]["node_id"] != before[0]["node_id"] and after[0]["pid"] != before[0]["pid"]
    reference = cluster.train_and_mix(model(), cluster.local_workers(2, seed=2, data=small), **options)
    for a, b in zip(result.model.layers, reference.model.layers):
        np.testing.assert_allclose(a.values, b.values, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(a.biases, b.biases, rtol=1e-9, atol=1e-12)


def test_with_no_node_to_take_its_workers_the_experiment_fails_naming_its_checkpoint(simulated, small, tmp_path):
    for _ in range(2):
        simulated.add_node(num_cpus=1, num_gpus=1)
    path = tmp_path / "lost.safetensors"
    options = dict(local_steps=3, test=small.test, progress=False, checkpoint=path, name="lost",
                   settings={"batch_size": 32})
    pool = cluster.ray_workers(2, seed=1, data=small, cpus_per_worker=0.5, gpus_per_worker=1, comp_type="CPU",
                               restart_timeout=15)
    try:
        first = model()
        cluster.train_and_mix(first, pool, rounds=1, **options)
        saved = path.read_bytes()
        loss = RemoveNodeOnSubmit(simulated, pool, 1)
        start = time.monotonic()
        with pytest.raises(cluster.ClusterError, match=rf"(?s)did not come back within 15 s.*last checkpoint is .*{path.name}"):
            cluster.train_and_mix(first, pool, rounds=3, resume=path, **options)
        assert time.monotonic() - start < 90
        loss.restore()
    finally:
        pool.shutdown()
    assert loss.fired and path.read_bytes() == saved
    assert sa.read_checkpoint(path, tensors=False).extra["round"] == 0


def test_a_pool_started_inside_a_placement_group_takes_its_bundles(simulated, small):
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    simulated.add_node(num_cpus=2)
    group = placement_group([{"CPU": 0.25}] * 3)  # as Ray Tune reserves a trial: its driver, then 2 workers
    ray.get(group.ready(), timeout=60)

    @ray.remote(num_cpus=0.25)
    def trial(data):
        pool = cluster.ray_workers(2, seed=0, data=data, cpus_per_worker=0.25)
        try:
            return pool.placement_group is None, ray.util.get_current_placement_group().id.hex(), len(pool)
        finally:
            pool.shutdown()

    try:
        strategy = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0)
        not_owned, group_id, size = ray.get(trial.options(scheduling_strategy=strategy).remote(small), timeout=240)
        assert not_owned and group_id == group.id.hex() and size == 2
        assert ray.util.placement_group_table(group)["state"] == "CREATED"  # the pool did not remove it
    finally:
        remove_placement_group(group)
