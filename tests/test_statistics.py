"""Weight statistics against plain per-sample loops, for dense and sparse layers."""

import numpy as np
import pytest

from conftest import build_model
from sparana.sparsity import _statistics as stats


def loop_activated(model, data, absolute):
    """The original's definition, sample by sample: S[j,k] = mean_x |a_j(x) W_jk| (or |mean a_j W_jk|)."""
    result = []
    for i, layer in enumerate(model.layers):
        w = layer.dense_weights()
        total = np.zeros_like(w)
        for x in data:
            a = model.partial_outputs(x[None, :], i)[0]
            contribution = a[:, None] * w
            total += np.abs(contribution) if absolute else contribution
        result.append(np.abs(total / len(data)))
    return result


@pytest.mark.parametrize("sparse", [False, True])
def test_maav_and_mav_match_the_per_sample_definition(sparse, rng):
    model = build_model([7, 6, 5, 3], ["relu", "relu", "linear"], sparse=sparse, density=0.5, dropout=0.5)
    data = rng.standard_normal((23, 7))  # signed inputs, so MAV differs from MAAV in layer 0
    for function, absolute in ((stats.maav, True), (stats.mav, False)):
        got = function(model, data)
        expected = loop_activated(model, data, absolute)
        for layer, g, e in zip(model.layers, got, expected):
            e = e.reshape(-1)[layer.value_keys()].reshape(g.shape) if layer.is_sparse else e
            np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)
    assert not np.allclose(stats.maav(model, data)[0], stats.mav(model, data)[0])
    np.testing.assert_array_equal(stats.maav(model, data)[1], stats.maav(model, data)[1])  # no accumulation


def test_pruned_and_other_sign_entries_are_not_candidates(rng):
    model = build_model([5, 4, 2], ["relu", "linear"])
    keep = rng.random((5, 4)) < 0.5
    model.layers[0].keep_only(keep)
    absolute = stats.absolute_values(model)[0]
    assert np.isnan(absolute[~keep]).all() and not np.isnan(absolute[keep]).any()
    w = model.layers[0].weights
    negative = stats.negative_values(model)[0]
    assert np.array_equal(~np.isnan(negative), keep & (w < 0))
    np.testing.assert_array_equal(negative[keep & (w < 0)], -w[keep & (w < 0)])
    positive = stats.positive_values(model)[0]
    assert np.array_equal(~np.isnan(positive), keep & (w > 0))


@pytest.mark.parametrize("sparse", [False, True])
def test_fan_out_ranks(sparse, rng):
    model = build_model([6, 5, 3], ["relu", "linear"], sparse=sparse, density=0.7)
    ranks = stats.fan_out_ranks(model)
    for layer, r in zip(model.layers, ranks):
        dense_w = np.abs(layer.dense_weights())
        present = np.zeros(dense_w.shape, dtype=bool)
        present.reshape(-1)[layer.value_keys()] = True
        expected = np.full(dense_w.shape, np.nan)
        for j in range(dense_w.shape[0]):  # each input unit's fan-out, ranked from 1
            cols = np.flatnonzero(present[j])
            expected[j, cols[np.argsort(dense_w[j, cols], kind="stable")]] = np.arange(1, cols.size + 1)
        got = np.full(dense_w.shape, np.nan)
        got.reshape(-1)[layer.value_keys()] = r.reshape(-1)
        np.testing.assert_array_equal(got, expected)


def test_bad_statistics_input(rng):
    model = build_model([5, 4, 2], ["relu", "linear"])
    with pytest.raises(ValueError, match=r"statistics of shape \(5, 4\) expected .* got \(4, 5\)"):
        stats.fan_out_ranks(model, [np.ones((4, 5)), np.ones((4, 2))])
    with pytest.raises(ValueError, match="one array per layer expected \\(2\\), got 1"):
        stats.check_statistics_list(model, [np.ones((5, 4))])
    with pytest.raises(ValueError, match="needs data"):
        stats.compute(model, "MAAV")
    with pytest.raises(ValueError, match="criterion must be one of"):
        stats.compute(model, "largest")
    with pytest.raises(ValueError, match="non-empty"):
        stats.maav(model, np.ones((0, 5)))
