"""The driver's experiments in one process: checkpoints, resume and the refusals."""

import json
import struct

import numpy as np
import pytest

import sparana as sa
from sparana import cluster
from sparana.data import MnistData


@pytest.fixture(scope="module")
def small():
    mnist = sa.load_mnist()
    return MnistData(mnist.train.slice(0, 1200), mnist.test.slice(0, 300))


def tiny_model(seed=0):
    model = sa.Model(784, [sa.DenseReluLayer(24), sa.DenseReluLayer(16), sa.DenseLinearLayer(10)],
                     comp_type="CPU", seed=seed, dtype="float64")
    model.initialize_weights("Xavier", bias_constant=0.1)
    return model


def run(small, rounds, checkpoint=None, resume=None, name="mix", model=None, seed=3):
    pool = cluster.local_workers(2, seed=seed, data=small)
    pruning = cluster.Pruning(targets={1: 0.5, 2: 0.8}, convert_at=0.8)
    return cluster.train_and_mix(model or tiny_model(), pool, rounds, 3, prune=pruning, test=small.test,
                                 progress=False, name=name, seed=seed, checkpoint=checkpoint, resume=resume,
                                 settings={"batch_size": 16})


def test_resume_after_the_second_round_equals_an_uninterrupted_run(small, tmp_path):
    path = tmp_path / "mix.safetensors"
    whole = run(small, 4)
    first = run(small, 2, checkpoint=path)
    assert [r["round"] for r in first.rounds] == [0, 1]
    resumed = run(small, 4, checkpoint=path, resume=path)
    assert resumed.resumed_from == 2
    assert [r["round"] for r in resumed.rounds] == [0, 1, 2, 3]
    assert resumed.rounds[:2] == first.rounds
    for a, b in zip(whole.model.layers, resumed.model.layers):
        assert a.is_sparse == b.is_sparse
        assert np.array_equal(a.values, b.values) and np.array_equal(a.biases, b.biases)
    assert [r["accuracy"] for r in whole.rounds] == [r["accuracy"] for r in resumed.rounds]
    assert sa.read_checkpoint(path, tensors=False).extra["round"] == 3


def test_a_checkpoint_that_does_not_fit_is_refused(small, tmp_path):
    path = tmp_path / "mix.safetensors"
    run(small, 1, checkpoint=path)
    model = tiny_model()
    before = [layer.values.copy() for layer in model.layers]
    with pytest.raises(sa.CheckpointError, match="belongs to experiment 'mix', not 'other'"):
        run(small, 3, resume=path, name="other", model=model)
    with pytest.raises(sa.CheckpointError, match="seed 3 differs"):
        run(small, 3, resume=path, seed=4, model=model)
    short = tmp_path / "short.safetensors"
    short.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(sa.CheckpointError):
        run(small, 3, resume=short, model=model)
    other_version = tmp_path / "v9.safetensors"
    other_version.write_bytes(_with_version(path.read_bytes(), "9"))
    with pytest.raises(sa.CheckpointError, match="version"):
        run(small, 3, resume=other_version, model=model)
    for layer, values in zip(model.layers, before):  # the run did not start from any of them
        assert np.array_equal(layer.values, values)


def _with_version(raw, version):
    """The same safetensors file with another format_version in its header."""
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + size])
    header["__metadata__"]["format_version"] = version
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + raw[8 + size:]


def test_vulcanize_checkpoints_and_resumes(small, tmp_path):
    path = tmp_path / "vulcanize.safetensors"
    models = []
    for plan in ([(3, None)], [(1, path), (3, path)]):
        model = tiny_model(seed=1)
        for rounds, checkpoint in plan:
            pool = cluster.local_workers(2, seed=2, data=small)
            cluster.vulcanize(model, pool, None, rounds, 2, test=small.test, progress=False, seed=2,
                              checkpoint=checkpoint, resume=checkpoint if rounds == 3 and checkpoint else None,
                              settings={"batch_size": 16})
        models.append(model)
    for a, b in zip(*[m.layers for m in models]):
        assert np.array_equal(a.values, b.values)


def test_vulcanize_with_normal_selection_uses_its_spread(small):
    def run(std):
        return cluster.vulcanize(tiny_model(), cluster.local_workers(2, seed=1, data=small), None, 1, 2,
                                 test=small.test, progress=False, seed=4, selection_type="normal", std=std,
                                 settings={"batch_size": 16})

    first, again, other = run(0.05), run(0.05), run(2.0)
    assert first.settings["std"] == 0.05 and len(first.rounds) == 1
    assert all(np.array_equal(a.values, b.values) for a, b in zip(first.model.layers, again.model.layers))
    assert not all(np.array_equal(a.values, b.values) for a, b in zip(first.model.layers, other.model.layers))
    with pytest.raises(ValueError, match="selection_type='normal' needs std"):
        cluster.vulcanize(tiny_model(), cluster.local_workers(2, seed=1, data=small), None, 1, 2,
                          test=small.test, progress=False, selection_type="normal")


def _with_extra(raw, change):
    """The same safetensors file with its header's ``extra`` entry changed by ``change(extra)``."""
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + size])
    extra = json.loads(header["__metadata__"]["extra"])
    change(extra)
    header["__metadata__"]["extra"] = json.dumps(extra)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + raw[8 + size:]


@pytest.mark.parametrize("field, change", [
    ("round", lambda e: e.pop("round")),
    ("round", lambda e: e.update(round=-1)),
    ("round", lambda e: e.update(round="2")),
    ("rounds", lambda e: e.update(rounds={"0": 1})),
    ("seed", lambda e: e.update(seed=-3)),
    ("config", lambda e: e.update(config=[1])),
    ("unexpected", lambda e: e.update(colour="red")),
])
def test_a_malformed_round_checkpoint_header_is_refused_by_name(small, tmp_path, field, change):
    path = tmp_path / "mix.safetensors"
    run(small, 1, checkpoint=path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(_with_extra(path.read_bytes(), change))
    model = tiny_model()
    before = [layer.values.copy() for layer in model.layers]
    with pytest.raises(sa.CheckpointError, match=rf"malformed header: extra.*{field}"):
        run(small, 3, resume=bad, model=model)
    assert all(np.array_equal(layer.values, values) for layer, values in zip(model.layers, before))


# ------------------------------------------------- rewiring between rounds (dynamic sparse training)
def sparse_tiny_model(seed=0):
    model = sa.Model(784, [sa.SparseReluLayer(24), sa.SparseReluLayer(16), sa.DenseLinearLayer(10)],
                     comp_type="CPU", seed=seed, dtype="float64")
    model.initialize_sparse_weights([0.2, 0.3, 1.0], bias_constant=0.1)
    model.layers[2].prune_mask = None
    return model


def run_rewired(small, method, rounds, checkpoint=None, resume=None, seed=3):
    pool = cluster.local_workers(2, seed=seed, data=small)
    # end: the schedule of the 4-round run, also in the 2-round run that stands for one stopped after round 1
    rewiring = cluster.Rewiring(method, fraction=0.3, every=1, end=4, samples=64, data=small.train)
    return cluster.train_and_mix(sparse_tiny_model(), pool, rounds, 3, test=small.test, progress=False, name=method,
                                 seed=seed, checkpoint=checkpoint, resume=resume, settings={"batch_size": 16},
                                 rewire=rewiring)


def patterns(model):
    return [(layer.to_scipy().indptr.tolist(), layer.to_scipy().indices.tolist()) for layer in model.layers[:2]]


@pytest.mark.parametrize("method", ["SET", "RigL"])
def test_rewiring_between_rounds_is_seeded_checkpointed_and_resumable(method, small, tmp_path):
    start = sparse_tiny_model()
    whole = run_rewired(small, method, 4)
    again = run_rewired(small, method, 4)
    assert patterns(whole.model) == patterns(again.model)
    assert [layer.nnz for layer in whole.model.layers] == [layer.nnz for layer in start.layers]
    assert patterns(whole.model) != patterns(start)
    assert [r.get("rewired", 0) > 0 for r in whole.rounds] == [False, True, True, True]
    fractions = [r["rewire_fraction"] for r in whole.rounds[1:]]
    assert fractions == pytest.approx([0.15 * (1 + np.cos(np.pi * r / 4)) for r in (1, 2, 3)])
    path = tmp_path / "rewired.safetensors"
    run_rewired(small, method, 2, checkpoint=path)
    resumed = run_rewired(small, method, 4, checkpoint=path, resume=path)
    assert resumed.resumed_from == 2
    assert patterns(resumed.model) == patterns(whole.model)
    for a, b in zip(whole.model.layers, resumed.model.layers):
        assert np.array_equal(a.values, b.values) and np.array_equal(a.biases, b.biases)
    assert [r["accuracy"] for r in resumed.rounds] == [r["accuracy"] for r in whole.rounds]


def test_a_rewiring_spec_is_checked(small):
    with pytest.raises(ValueError, match="method must be one of .* got 'random'"):
        cluster.Rewiring("random")
    with pytest.raises(ValueError, match="every must be a positive integer, got 0"):
        cluster.Rewiring(every=0)
    with pytest.raises(TypeError, match=r"rewire must be a cluster.Rewiring"):
        cluster.train_and_mix(sparse_tiny_model(), cluster.local_workers(1, seed=0, data=small), 1, 1,
                              rewire={"method": "SET"}, progress=False)
