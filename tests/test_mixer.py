"""The model mixer against element-wise reference formulas, dense and sparse, with masks."""

import numpy as np
import pytest

from conftest import build_model
from sparana.sparsity import _statistics as statistics
from sparana.compose._mixer import ModelMixer

SIZES = [6, 5, 4, 3]
ACTIVATIONS = ["relu", "relu", "linear"]


def family(count, sparse=False, masked=False, dtype="float64"):
    """``count`` models sharing one architecture and pattern, with different weights and biases."""
    base = build_model(SIZES, ACTIVATIONS, sparse=sparse, density=0.6, dtype=dtype)
    if masked:
        base.layers[0].keep_only(np.random.default_rng(3).random((6, 5)) < 0.6)
    models = []
    for m in range(count):
        model = build_model(SIZES, ACTIVATIONS, sparse=sparse, density=0.6, dtype=dtype)
        if masked:
            model.layers[0].keep_only(base.layers[0].prune_mask)
        rng = np.random.default_rng(100 + m)
        for layer in model.layers:
            layer.values[...] += rng.standard_normal(layer.values.shape) * (layer.values != 0)
            layer.biases = rng.standard_normal(layer.size)
        models.append(model)
    return models


def params(model):
    return [(layer.values.copy(), layer.biases.copy()) for layer in model.layers]


def units_of(layer):
    return np.asarray(layer.value_keys()) % layer.size


@pytest.mark.parametrize("sparse, masked", [(False, False), (False, True), (True, False)])
def test_average_all_of_copies_is_the_model_and_otherwise_the_mean(sparse, masked):
    models = family(3, sparse, masked, dtype="float32")
    mixer = ModelMixer()
    for _ in range(4):
        mixer.add_model(models[0])
    target = family(1, sparse, masked, dtype="float32")[0]
    mixer.average_all(target)
    for (w, b), layer in zip(params(models[0]), target.layers):
        np.testing.assert_array_equal(layer.values, w)
        np.testing.assert_array_equal(layer.biases, b)
    mixer = ModelMixer()
    for model in models:
        mixer.add_model(model)
    mixer.average_all(target)
    for i, layer in enumerate(target.layers):
        np.testing.assert_allclose(layer.values, np.mean([m.layers[i].values for m in models], axis=0), rtol=1e-6)
        np.testing.assert_allclose(layer.biases, np.mean([m.layers[i].biases for m in models], axis=0), rtol=1e-6)
        if layer.prune_mask is not None:
            assert np.all(layer.values[~layer.prune_mask] == 0)


@pytest.mark.parametrize("sparse", [False, True])
def test_importance_weighted_average_against_the_formula(sparse, rng):
    models = family(3, sparse, masked=not sparse)
    mixer = ModelMixer()
    stats = []
    for model in models:
        mixer.add_model(model)
        s = [rng.random(layer.values.shape) for layer in model.layers]
        s[1][..., :2] = 0.0  # every statistic zero here: plain mean
        stats.append(s)
        mixer.add_stats(s)
    target = family(1, sparse, masked=not sparse)[0]
    mixer.importance_weighted_average(target)
    for i, layer in enumerate(target.layers):
        w = np.array([m.layers[i].values for m in models])
        s = np.array([st[i] for st in stats])
        total = s.sum(axis=0)
        expected = np.where(total > 0, (w * s).sum(axis=0) / np.where(total > 0, total, 1), w.mean(axis=0))
        np.testing.assert_allclose(layer.values, expected, rtol=1e-12, atol=1e-15)
        assert np.isfinite(layer.values).all()
        # a bias is weighted by the mean statistic of its unit's incoming weights (plain loops)
        units = units_of(layer)
        expected_b = np.empty(layer.size)
        for u in range(layer.size):
            importance = np.array([st[i].reshape(-1)[units == u].mean() if np.any(units == u) else 0.0
                                   for st in stats])
            biases = np.array([m.layers[i].biases[u] for m in models])
            expected_b[u] = biases @ importance / importance.sum() if importance.sum() > 0 else biases.mean()
        np.testing.assert_allclose(layer.biases, expected_b, rtol=1e-12)


@pytest.mark.parametrize("sparse", [False, True])
def test_equal_statistics_give_the_plain_average(sparse, rng):
    models = family(3, sparse)
    mixer = ModelMixer()
    for model in models:
        mixer.add_model(model)
        mixer.add_stats([np.full(layer.values.shape, 0.3) for layer in model.layers])
    weighted, plain = family(1, sparse)[0], family(1, sparse)[0]
    mixer.importance_weighted_average(weighted)
    mixer.average_all(plain)
    for a, b in zip(weighted.layers, plain.layers):
        np.testing.assert_allclose(a.values, b.values, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(a.biases, b.biases, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("sparse", [False, True])
def test_rank_and_zero_then_replace_all_takes_exactly_the_marked_weights(sparse, rng):
    models = family(2, sparse, masked=not sparse)
    data = rng.random((20, SIZES[0]))
    mixer = ModelMixer()
    for model in models:
        mixer.add_model(model)
        mixer.add_MAAV_stats(model, data)
    raw = [s.copy() for s in mixer.statistics[1]]
    mixer.rank_and_zero(zero=0.5)
    for s_raw, ranked, primary in zip(raw, mixer.statistics[1], mixer.statistics[0]):
        size = s_raw.size
        order = np.argsort(s_raw.reshape(-1), kind="stable")
        expected = np.empty(size)
        expected[order] = np.arange(1, size + 1)
        assert sorted(primary.reshape(-1).tolist()) == list(range(1, size + 1))  # the primary is never zeroed
        expected[expected < 0.5 * size] = 0
        np.testing.assert_array_equal(ranked.reshape(-1), expected)
    target = family(1, sparse, masked=not sparse)[0]
    mixer.replace_all(target, primary=0, secondary=1)
    for i, layer in enumerate(target.layers):
        marked = mixer.statistics[1][i] != 0
        assert 0 < marked.sum() < marked.size
        w1, w2 = models[0].layers[i].values, models[1].layers[i].values
        np.testing.assert_array_equal(layer.values[marked], w2[marked])
        np.testing.assert_array_equal(layer.values[~marked], w1[~marked])
        units = units_of(layer)
        for u in range(layer.size):  # a unit takes the secondary's bias when most of its weights come from it
            share = marked.reshape(-1)[units == u].mean() if np.any(units == u) else 0.0
            source = models[1] if share > 0.5 else models[0]
            assert layer.biases[u] == source.layers[i].biases[u]


def test_nan_statistics_are_zero_importance_and_pruned_weights_stay_zero():
    models = family(2, masked=True)
    mixer = ModelMixer()
    for model in models:
        mixer.add_model(model)
        mixer.add_absolute_values(model)
    assert np.isnan(statistics.absolute_values(models[0])[0]).any()
    assert not any(np.isnan(s).any() for slot in mixer.statistics for s in slot)
    target = family(1)[0]  # no mask: the mix itself keeps pruned weights at zero
    mixer.importance_weighted_average(target)
    pruned = ~models[0].layers[0].prune_mask
    assert pruned.any() and np.all(target.layers[0].values[pruned] == 0)


def test_models_that_differ_are_refused_and_nothing_changes():
    dense, sparse = family(1)[0], family(1, sparse=True)[0]
    mixer = ModelMixer()
    mixer.add_model(dense)
    with pytest.raises(ValueError, match="layer 0 is sparse"):
        mixer.add_model(sparse)
    with pytest.raises(ValueError, match="layer 1 is 5 -> 3"):
        mixer.add_model(build_model([6, 5, 3, 3], ACTIVATIONS))
    with pytest.raises(ValueError, match="2 layers, the mixer.s models have 3"):
        mixer.add_model(build_model([6, 5, 3], ["relu", "linear"]))
    masked = family(1, masked=True)[0]
    with pytest.raises(ValueError, match="layer 0's prune mask differs"):
        mixer.add_model(masked)
    assert mixer.model_count == 1
    sparse_mixer = ModelMixer()
    sparse_mixer.add_model(sparse)
    other = build_model(SIZES, ACTIVATIONS, sparse=True, density=0.6, seed=9)
    with pytest.raises(ValueError, match="sparse pattern differs"):
        sparse_mixer.add_model(other)
    with pytest.raises(ValueError, match="statistics for model 1"):
        mixer.add_model(dense)
        mixer.add_absolute_values(dense)
        mixer.importance_weighted_average(dense)
    with pytest.raises(ValueError, match="secondary"):
        mixer.replace_all(dense, 0, 2)
    with pytest.raises(ValueError, match=r"statistics\[0\] of shape \(6, 5\)"):
        mixer.add_stats([np.ones((5, 6)), np.ones((5, 4)), np.ones((4, 3))])
    with pytest.raises(ValueError, match=">= 0"):
        mixer.add_stats([-np.ones((6, 5)), np.ones((5, 4)), np.ones((4, 3))])
    with pytest.raises(ValueError, match="zero"):
        mixer.rank_and_zero(zero=1.5)
    target = build_model([6, 5, 4, 2], ACTIVATIONS)
    before = params(target)
    with pytest.raises(ValueError, match="the target model: layer 2 is 4 -> 2"):
        mixer.average_all(target)
    for (w, b), layer in zip(before, target.layers):
        np.testing.assert_array_equal(layer.values, w)
        np.testing.assert_array_equal(layer.biases, b)
    with pytest.raises(ValueError, match="replace"):
        mixer.add_model(dense, replace=5)
    assert mixer.add_model(dense, replace=0) == 0 and mixer.model_count == 2
