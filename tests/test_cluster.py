"""Sparana on a real Ray cluster started by the tests: actors, shards, experiments, jobs."""

import json
import os
import re
import socket
import threading
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

import sparana as sa  # noqa: E402
from ray_support import RAY, Head, descendants, free_port, is_loopback, listening_sockets  # noqa: E402
from sparana import cluster  # noqa: E402
from sparana.data import MnistData  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def head(ray_environment):
    head = Head(ray_environment).start()
    try:
        cluster.init(address=head.address)
        yield head
    finally:
        cluster.shutdown()
        head.stop()


@pytest.fixture(scope="module")
def small():
    mnist = sa.load_mnist()
    return MnistData(mnist.train.slice(0, 2000), mnist.test.slice(0, 500))


def small_model(seed=0, dtype="float64"):
    model = sa.Model(784, [sa.DenseReluLayer(48), sa.DenseReluLayer(32), sa.DenseLinearLayer(10)],
                     comp_type="CPU", seed=seed, dtype=dtype)
    model.initialize_weights("Xavier", bias_constant=0.1)
    return model


def assert_same_weights(a, b, rtol=1e-9):
    assert [layer.layer_type for layer in a.layers] == [layer.layer_type for layer in b.layers]
    for la, lb in zip(a.layers, b.layers):
        np.testing.assert_allclose(la.values, lb.values, rtol=rtol, atol=1e-12)
        np.testing.assert_allclose(la.biases, lb.biases, rtol=rtol, atol=1e-12)


@pytest.fixture
def pools(head, small):
    """Two Ray workers and the same two workers in this process."""
    remote = cluster.ray_workers(2, seed=7, data=small, experiment="pytest")
    local = cluster.local_workers(2, seed=7, data=small)
    yield remote, local
    remote.shutdown()


def test_workers_are_named_and_get_their_shard_without_a_copy(head, pools):
    remote, _ = pools
    from ray.util.state import list_actors

    names = {actor.name for actor in list_actors(address=head.dashboard, filters=[("state", "=", "ALIVE")])}
    assert all(name in names for name in remote.names)
    assert all(name.startswith(f"pytest/trainer/shard-{i}-") for i, name in enumerate(remote.names))
    for info in remote.call("shard_info", [()] * 2):
        assert info["rows"] == 1000 and info["bytes"] == 1000 * 784
        assert not info["writeable"]
        assert "plasma" in info["mapping"] or "/dev/shm" in info["mapping"], info["mapping"]


@pytest.mark.parametrize("mix", ["average", "importance"])
def test_train_and_mix_equals_one_process(pools, small, mix):
    remote, local = pools
    results = []
    for pool in (remote, local):
        model = small_model()
        pruning = cluster.Pruning(targets={1: 0.6}, convert_at=0.6)
        result = cluster.train_and_mix(model, pool, rounds=2, local_steps=4, mix=mix, prune=pruning,
                                       test=small.test, progress=False, settings={"batch_size": 32})
        results.append(result)
    assert_same_weights(results[0].model, results[1].model)
    assert results[0].model.layers[0].is_sparse  # converted on the driver, trained sparse on the workers
    assert [r["accuracy"] for r in results[0].rounds] == [r["accuracy"] for r in results[1].rounds]
    assert results[0].rounds[1]["sparsity"] == pytest.approx(0.6, abs=1e-3)


def test_vulcanize_equals_one_process(pools, small):
    remote, local = pools
    models = []
    for pool in (remote, local):
        model = small_model(seed=3)
        cluster.vulcanize(model, pool, [20, 12, 10], rounds=2, local_steps=3, test=small.test, progress=False,
                          seed=5, settings={"batch_size": 16})
        models.append(model)
    assert_same_weights(*models)
    assert not np.array_equal(models[0].layers[2].weights, small_model(seed=3).layers[2].weights)


def test_bad_input_fails_fast(head, small):
    start = time.monotonic()
    with pytest.raises(cluster.ClusterError, match=r"3 workers need 3 x \{CPU: 1\} .*hold 2 such"):
        cluster.ray_workers(3, seed=0, data=small)
    with pytest.raises(ValueError, match="k = 2 disjoint submodels need 60 units in main layer 1, which has 32"):
        cluster.vulcanize(small_model(), cluster.local_workers(2, 0, small), [15, 30, 10], 1, 1, test=small.test)
    assert time.monotonic() - start < 10
    code = "from sparana import cluster; cluster.init(address='127.0.0.1:%d')" % free_port()
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "no Ray cluster answers at" in done.stderr
    assert time.monotonic() - start < 60  # seconds (importing Ray included), not Ray's minutes of retries


def test_dashboard_api_requires_the_token(head):
    with pytest.raises(urllib.error.HTTPError, match="401"):
        urllib.request.urlopen(f"{head.dashboard}/api/jobs/", timeout=10)
    request = urllib.request.Request(f"{head.dashboard}/api/jobs/", headers={"Authorization": f"Bearer {head.token()}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_every_port_of_the_cluster_is_on_the_loopback(head):
    sockets = listening_sockets(descendants(head.process.pid))
    assert len(sockets) >= 4, sockets  # GCS, raylet, dashboard, agents...
    assert (head.port in {port for _, port in sockets}) and all(is_loopback(a) for a, _ in sockets), sockets


def test_ray_job_submit_runs_the_distributed_job(head, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    results = tmp_path / "results"
    job_id = head.submit(["python", "jobs/distributed_mnist.py", "--workers", "2", "--mix-rounds", "1",
                          "--prune-levels", "0.5", "--vulcanize-rounds", "1", "--local-steps", "3", "--no-progress",
                          "--results", str(results)], cwd=ROOT)
    client = JobSubmissionClient(head.dashboard, headers={"Authorization": f"Bearer {head.token()}"})
    deadline = time.monotonic() + 400
    while client.get_job_status(job_id) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.monotonic() < deadline, "the job did not finish in time"
        time.sleep(2)
    logs = client.get_job_logs(job_id)
    assert client.get_job_status(job_id) == JobStatus.SUCCEEDED, logs[-3000:]
    assert "final test accuracy" in logs and "distributed_mnist/trainer/shard-1" in logs
    stages = json.loads((results / "results.json").read_text())["stages"]
    assert [s["name"] for s in stages] == ["train and mix", "prune and mix", "vulcanize"]


def medium_model(seed=0):
    model = sa.Model(784, [sa.DenseReluLayer(256), sa.DenseReluLayer(128), sa.DenseLinearLayer(10)],
                     comp_type="CPU", seed=seed, dtype="float64")
    model.initialize_weights("Xavier", bias_constant=0.1)
    return model


class _Submitted:
    """An actor method whose ``remote`` (also after ``options``) tells ``then`` which call it sent."""

    def __init__(self, method, then):
        self.method, self.then = method, then

    def options(self, **options):
        return _Submitted(self.method.options(**options), self.then)

    def remote(self, name, *args):
        reference = self.method.remote(name, *args)
        self.then(name)
        return reference


class KillOnSubmit:
    """Stands in for a pool's actor handle: the first ``method`` call is sent, then the actor is killed.

    The call is then in flight (queued or running on the actor) when the actor dies, whatever the
    machine's speed, so the pool must notice the loss and redo the call.
    """

    def __init__(self, pool, i, method="train_contribution", no_restart=False):
        self.pool, self.i, self.actor = pool, i, pool.actors[i]
        self.method, self.no_restart, self.fired = method, no_restart, False
        pool.actors[i] = self

    def __getattr__(self, name):
        attribute = getattr(self.actor, name)
        return attribute if name != "run" or self.fired else _Submitted(attribute, self._submitted)

    def _submitted(self, method):
        if method == self.method and not self.fired:
            self.fired = True
            ray.kill(self.actor, no_restart=self.no_restart)

    def restore(self):
        self.pool.actors[self.i] = self.actor


def test_a_worker_killed_mid_round_is_restarted_and_the_result_is_unchanged(head, small):
    remote = cluster.ray_workers(2, seed=11, data=small, experiment="pytest-kill")
    try:
        pids = [info["pid"] for info in remote.call("ping", [()] * 2)]
        killer = KillOnSubmit(remote, 0)
        model = medium_model()
        cluster.train_and_mix(model, remote, rounds=1, local_steps=300, test=small.test, progress=False,
                              settings={"batch_size": 64})
        killer.restore()
        after = [info["pid"] for info in remote.call("ping", [()] * 2)]
    finally:
        remote.shutdown()
    assert killer.fired and remote.retries == 1  # killed during its call, which was redone
    assert after[0] != pids[0] and after[1] == pids[1]  # worker 0 was replaced, worker 1 was not
    reference = medium_model()
    cluster.train_and_mix(reference, cluster.local_workers(2, seed=11, data=small), rounds=1, local_steps=300,
                          test=small.test, progress=False, settings={"batch_size": 64})
    assert_same_weights(model, reference)


def test_a_worker_that_cannot_come_back_fails_the_experiment_and_keeps_its_checkpoint(head, small, tmp_path):
    path = tmp_path / "lost.safetensors"
    remote = cluster.ray_workers(2, seed=1, data=small, experiment="pytest-lost")
    try:
        model = medium_model()
        options = dict(local_steps=30, test=small.test, progress=False, checkpoint=path, name="lost",
                       settings={"batch_size": 64})
        cluster.train_and_mix(model, remote, rounds=1, **options)
        saved = path.read_bytes()
        killer = KillOnSubmit(remote, 1, no_restart=True)
        with pytest.raises(cluster.ClusterError, match=f"(?s)died and Ray could not restart it.*last checkpoint is .*{path.name}"):
            cluster.train_and_mix(model, remote, rounds=3, resume=path, **options)
        killer.restore()
    finally:
        remote.shutdown()
    assert killer.fired
    assert path.read_bytes() == saved
    assert sa.read_checkpoint(path, tensors=False).extra["round"] == 0


def test_resume_on_ray_continues_from_the_third_round(head, small, tmp_path):
    path = tmp_path / "resume.safetensors"
    remote = cluster.ray_workers(2, seed=5, data=small, experiment="pytest-resume")
    try:
        options = dict(local_steps=3, test=small.test, progress=False, seed=5, name="resume",
                       settings={"batch_size": 32})
        whole = cluster.train_and_mix(medium_model(), remote, rounds=4, **options)
        stopped = cluster.train_and_mix(medium_model(), remote, rounds=2, checkpoint=path, **options)
        resumed = cluster.train_and_mix(medium_model(seed=9), remote, rounds=4, checkpoint=path, resume=path,
                                        **options)
    finally:
        remote.shutdown()
    assert len(stopped.rounds) == 2 and resumed.resumed_from == 2
    assert [r["round"] for r in resumed.rounds] == [0, 1, 2, 3]
    for a, b in zip(whole.model.layers, resumed.model.layers):
        assert np.array_equal(a.values, b.values) and np.array_equal(a.biases, b.biases)


def test_worker_metrics_reach_the_metrics_endpoint(head, small):
    remote = cluster.ray_workers(2, seed=0, data=small, experiment="pytest-metrics")
    try:
        cluster.train_and_mix(small_model(), remote, rounds=1, local_steps=2, test=small.test, progress=False,
                              name="pytest-metrics")
        wanted = ['ray_sparana_worker_loss{', 'ray_sparana_worker_samples_per_second{',
                  'ray_sparana_worker_accuracy{', 'ray_sparana_master_accuracy{']
        deadline, text = time.monotonic() + 90, ""
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{head.metrics_port}/metrics", timeout=10) as response:
                text = response.read().decode()
            lines = [line for line in text.splitlines() if 'experiment="pytest-metrics"' in line]
            # every metric, and the worker metrics of both workers (they are exported independently)
            if all(sum(line.startswith(w) for line in lines) >= (2 if "worker" in w else 1) for w in wanted):
                break
            time.sleep(2)
    finally:
        remote.shutdown()
    losses = [line for line in lines if line.startswith("ray_sparana_worker_loss{")]
    assert {re.search(r'shard="(\d)"', line).group(1) for line in losses} == {"0", "1"}, "\n".join(lines)
    assert all('role="trainer"' in line for line in losses)
    assert any(line.startswith("ray_sparana_master_accuracy{") for line in lines)


class KillAfterCall:
    """A pool whose worker ``i`` is killed (and restarted by Ray) after the first ``method`` call returns."""

    def __init__(self, pool, i, method="train_contribution"):
        self.pool, self.i, self.method, self.fired = pool, i, method, False

    def __len__(self):
        return len(self.pool)

    def call(self, method, args_per_worker):
        return self.pool.call(method, args_per_worker)

    def map_reduce(self, method, args_per_worker):
        results = self.pool.map_reduce(method, args_per_worker)
        if method == self.method and not self.fired:
            self.fired = True
            ray.kill(self.pool.actors[self.i], no_restart=False)
        return results

    @property
    def driver_bytes(self):
        return self.pool.driver_bytes


def test_importance_mixing_survives_a_worker_restarted_between_calls(head, small):
    options = dict(rounds=2, local_steps=3, mix="importance", test=small.test, progress=False,
                   settings={"batch_size": 32}, statistics_samples=200)
    remote = cluster.ray_workers(2, seed=4, data=small, experiment="pytest-between")
    try:
        killer = KillAfterCall(remote, 0)
        result = cluster.train_and_mix(small_model(), killer, **options)
    finally:
        remote.shutdown()
    assert killer.fired and len(result.rounds) == 2
    reference = cluster.train_and_mix(small_model(), cluster.local_workers(2, seed=4, data=small), **options)
    assert_same_weights(result.model, reference.model)


def test_an_integer_gives_that_many_ray_workers_released_at_the_end(head, small):
    from ray.util.state import list_actors

    def alive():
        return {a.name for a in list_actors(address=head.dashboard, filters=[("state", "=", "ALIVE")]) if a.name.startswith("experiment/")}

    before = alive()
    result = cluster.train_and_mix(small_model(), 2, rounds=1, local_steps=2, data=small, progress=False, seed=1)
    assert len(result.rounds) == 1 and result.rounds[0]["samples"] == 2 * 2 * 128
    deadline = time.monotonic() + 30
    while alive() != before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert alive() == before
    for bad in ("two", 0, -1, True, 2.5, None):
        with pytest.raises(TypeError, match=r"workers must be a worker pool .* or a positive integer"):
            cluster.train_and_mix(small_model(), bad, rounds=1, local_steps=1, data=small, progress=False)


def test_workers_get_their_data_without_ray_warning_about_restarts(head):
    # In a process of its own: Ray's core worker prints the warning once per process.
    code = f"""
import ray, sparana as sa
from sparana import cluster
from sparana.data import MnistData
cluster.init(address={head.address!r})
mnist = sa.load_mnist()
remote = cluster.ray_workers(2, seed=0, data=MnistData(mnist.train.slice(0, 400), mnist.test.slice(0, 100)))
ray.kill(remote.actors[1], no_restart=False)
print([info["rows"] for info in remote.call("shard_info", [()] * 2)])  # the restarted worker's shard came back
remote.shutdown()
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=head.env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[200, 200]" in done.stdout
    assert "constructor arguments in the object store" not in done.stderr + done.stdout


def test_a_driver_stopped_mid_experiment_resumes_to_the_weights_of_an_unstopped_run(head, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(head.dashboard, headers={"Authorization": f"Bearer {head.token()}"})
    job = ["python", "jobs/distributed_mnist.py", "--workers", "2", "--mix-rounds", "6", "--prune-levels",
           "--vulcanize-rounds", "0", "--local-steps", "60", "--no-progress", "--seed", "3", "--results"]

    def wait(job_id, until=(JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED), timeout=400):
        deadline = time.monotonic() + timeout
        while (status := client.get_job_status(job_id)) not in until:
            assert time.monotonic() < deadline, f"job {job_id} is still {status}"
            time.sleep(0.5)
        return status

    def last_round(folder):
        path = folder / "checkpoints" / "train_and_mix.safetensors"
        return sa.read_checkpoint(path, tensors=False).extra["round"] if path.exists() else None

    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert wait(head.submit(job + [str(whole)], cwd=ROOT)) == JobStatus.SUCCEEDED
    stopped = head.submit(job + [str(parts)], cwd=ROOT)
    deadline = time.monotonic() + 300
    while (last_round(parts) or -1) < 1:  # rounds 0 and 1 are checkpointed
        assert time.monotonic() < deadline and client.get_job_status(stopped) != JobStatus.FAILED
        time.sleep(0.1)
    done = subprocess.run([str(RAY), "job", "stop", "--address", head.dashboard, stopped], env=head.env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert wait(stopped) == JobStatus.STOPPED
    assert last_round(parts) < 5  # stopped in the middle
    resumed = head.submit(job + [str(parts), "--resume"], cwd=ROOT)
    assert wait(resumed) == JobStatus.SUCCEEDED, client.get_job_logs(resumed)[-3000:]
    assert "resumed after round" in client.get_job_logs(resumed)
    a = sa.read_checkpoint(whole / "checkpoints" / "train_and_mix.safetensors")
    b = sa.read_checkpoint(parts / "checkpoints" / "train_and_mix.safetensors")
    assert a.extra["round"] == b.extra["round"] == 5
    assert set(a.tensors) == set(b.tensors)
    for name in a.tensors:
        assert np.array_equal(a.tensors[name], b.tensors[name]), name


def test_the_embedded_ray_makes_an_owner_only_token_and_stays_on_the_loopback(tmp_path):
    code = f"""
import json, os, stat, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import ray
from ray_support import descendants, listening_sockets
from sparana import cluster
cluster.init(num_cpus=1)
ray.get(ray.remote(lambda: 1).remote())
print("SOCKETS", json.dumps(listening_sockets(descendants(os.getpid()))))
print("MODE", oct(stat.S_IMODE(os.stat(os.path.expanduser("~/.ray/auth_token")).st_mode)))
cluster.shutdown()
"""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env.update(HOME=str(tmp_path), RAY_USAGE_STATS_ENABLED="0")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    sockets = json.loads(done.stdout.split("SOCKETS", 1)[1].splitlines()[0])
    assert len(sockets) >= 4 and all(is_loopback(address) for address, _ in sockets), sockets
    assert "MODE 0o600" in done.stdout
    assert "Token authentication is disabled" not in done.stderr
