"""Experiments of config files, mapped onto the driver's experiments (workers in this process)."""

import numpy as np
import pytest

import sparana as sa
from sparana import cluster
from sparana.data import MnistData

BASE = """\
name: {name}
data: {{path: mnist, train_rows: 1200, test_rows: 300}}
model: {{layers: [[relu, 24], [relu, 16], [linear, 10]], init: 0.05, bias: 0.0}}
experiment: {kind}
rounds: 4
local_steps: 10
train: {{batch_size: 32, learning_rate: 0.005}}
"""


@pytest.fixture(scope="module")
def small():
    mnist = sa.load_mnist()
    return MnistData(mnist.train.slice(0, 1200), mnist.test.slice(0, 300))


def experiment(tmp_path, kind, extra=""):
    path = tmp_path / f"{kind}.yaml"
    path.write_text(BASE.format(name=kind, kind=kind) + extra)
    return cluster.load_config(path).experiment()


def run(config, small, **options):
    pool = cluster.local_workers(config["workers"], config["seed"], small)
    return cluster.run_experiment(config, small, workers=pool, **options)


@pytest.mark.parametrize("kind, extra, workers", [
    ("train", "", 1),
    ("prune_and_retrain", "prune: {targets: {1: 0.5, 2: 0.9}, convert_at: 0.9}\n", 1),
    ("train_and_mix", "mix: importance\nprune: {targets: {2: 0.6}, criterion: MAAV, samples: 200}\n", 2),
    ("vulcanize", "workers: 2\nvulcanize: {sizes: [12, 8, 10]}\n", 2),
])
def test_each_kind_of_experiment_runs_from_its_config(tmp_path, small, kind, extra, workers):
    config = experiment(tmp_path, kind, extra)
    assert config["workers"] == workers
    seen = []
    result = run(config, small, checkpoint=tmp_path / "rounds.safetensors", on_round=lambda f, r: seen.append(f))
    assert [f["round"] for f in seen] == [0, 1, 2, 3] and len(result.rounds) == 4
    assert all(isinstance(v, (int, float)) for f in seen for v in f.values())
    assert seen[-1]["parameters"] == result.model.parameter_count()
    assert result.rounds[-1]["accuracy"] > 0.3, result.rounds  # chance is 0.1
    if kind == "prune_and_retrain":
        assert seen[1]["sparsity"] == pytest.approx(0.5, abs=1e-3) and result.model.layers[0].is_sparse
        assert seen[-1]["sparsity"] == pytest.approx(0.9, abs=1e-3)
    if kind == "train_and_mix":
        assert seen[2]["sparsity"] == pytest.approx(0.6, abs=1e-3)


def test_a_run_resumed_after_two_rounds_ends_with_the_weights_of_an_unstopped_run(tmp_path, small):
    config = experiment(tmp_path, "train_and_mix", "prune: {targets: {1: 0.5, 3: 0.8}, convert_at: 0.8}\n")
    whole = run(config, small, checkpoint=tmp_path / "whole.safetensors")
    stopped = dict(config, rounds=2)
    path = tmp_path / "parts.safetensors"
    run(stopped, small, checkpoint=path)
    resumed = run(config, small, checkpoint=path, resume=True)
    assert resumed.resumed_from == 2 and [r["round"] for r in resumed.rounds] == [0, 1, 2, 3]
    for a, b in zip(whole.model.layers, resumed.model.layers):
        assert a.is_sparse == b.is_sparse
        assert np.array_equal(sa.to_host(a.values), sa.to_host(b.values)) and np.array_equal(a.biases, b.biases)
    again = run(config, small, checkpoint=path, resume=True)  # nothing left to do: the result as it was
    assert again.resumed_from == 4 and again.rounds[-1]["accuracy"] == whole.rounds[-1]["accuracy"]
