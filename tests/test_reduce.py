"""Mixing as a reduction among the workers equals the model mixer on the driver."""

import numpy as np
import pytest

import sparana as sa
from sparana import cluster
from sparana.cluster._reduce import apply, combine, contribution, nbytes, tree
from sparana.cluster._worker import load_payload, model_payload
from sparana.data import MnistData


@pytest.fixture(scope="module")
def small():
    mnist = sa.load_mnist()
    return MnistData(mnist.train.slice(0, 1500), mnist.test.slice(0, 200))


def start_model(sparse):
    model = sa.Model(784, [sa.DenseReluLayer(40), sa.DenseReluLayer(24), sa.DenseLinearLayer(10)],
                     comp_type="CPU", seed=3, dtype="float64")
    model.initialize_weights("Xavier", bias_constant=0.1)
    lobo = sa.Lobotomizer(model)
    lobo.get_absolute_values()
    lobo.prune_smallest(layers=[0.5, 0.7, None])  # dense prune masks...
    if sparse:
        model.convert_to_sparse([1])  # ...and a CSR layer
    return model


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
@pytest.mark.parametrize("mix", ["average", "importance"])
def test_the_reduced_mix_equals_the_model_mixer(small, workers, mix):
    model = start_model(sparse=workers % 2 == 1)
    payload = model_payload(model)
    pool = cluster.local_workers(workers, seed=1, data=small)
    outputs = pool.call("train_round", [(payload, 0, 3, {"batch_size": 16})] * workers)
    trained = [load_payload(o["payload"]) for o in outputs]
    statistics = [w._statistics(m, "MAAV", 100, 0) for w, m in zip(pool.workers, trained)] \
        if mix == "importance" else None

    mixer = sa.ModelMixer()
    for i, m in enumerate(trained):
        mixer.add_model(m)
        if statistics is not None:
            mixer.add_stats(statistics[i])
    expected = load_payload(payload)
    (mixer.importance_weighted_average if statistics else mixer.average_all)(expected)

    parts = [contribution(m, payload, None if statistics is None else statistics[i]) for i, m in enumerate(trained)]
    total = tree(parts, lambda i, a, b: combine(a, b))
    assert total["count"] == workers
    mixed = load_payload(payload)
    apply(mixed, total)
    for a, b in zip(mixed.layers, expected.layers):
        np.testing.assert_allclose(a.values, b.values, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(a.biases, b.biases, rtol=1e-12, atol=1e-12)
        if a.prune_mask is not None:
            assert not np.any(a.values[~a.prune_mask])


def test_the_tree_pairs_neighbours_level_by_level():
    seen = []
    result = tree(list("abcde"), lambda i, a, b: seen.append((i, a, b)) or f"({a}{b})")
    assert result == "(((ab)(cd))e)"
    assert seen == [(0, "a", "b"), (2, "c", "d"), (0, "(ab)", "(cd)"), (0, "((ab)(cd))", "e")]


def test_the_driver_receives_one_contribution_whatever_the_number_of_workers(small):
    sizes = {}
    for workers in (2, 4):
        pool = cluster.local_workers(workers, seed=0, data=small)
        model = start_model(sparse=False)
        result = cluster.train_and_mix(model, pool, rounds=1, local_steps=1, test=small.test, progress=False,
                                       settings={"batch_size": 8})
        sizes[workers] = result.rounds[0]["driver_bytes"]
    one = nbytes(contribution(model, model_payload(model)))
    assert sizes[2] == sizes[4] and one <= sizes[2] < one * 1.01
