"""The parameter selector: masks, ratios, subsets, output classes, and selected training."""

import math

import numpy as np
import pytest
from conftest import build_model

import sparana as sa
from sparana._backend import to_host
from sparana.compat import parameter_selector
from sparana.sparsity._selector import ParameterSelector

SIZES = [12, 10, 8, 5]
ACTIVATIONS = ["relu", "relu", "linear"]


def _model(sparse=False, seed=0):
    return build_model(SIZES, ACTIVATIONS, sparse=sparse, density=0.6, seed=seed)


def _masks(model):
    return [to_host(layer.training_mask) for layer in model.layers]


def _k(ratio, candidates):
    return math.floor(round(ratio * candidates, 9))


@pytest.mark.parametrize("sparse", [False, True])
def test_get_top_picks_exactly_the_largest_statistics(rng, sparse):
    model = _model(sparse)
    selector = ParameterSelector(model)
    stats = [rng.random(layer.values.shape) for layer in model.layers]
    selector.set_statistics(stats)
    masks = selector.get_top(0.3)
    for layer, s, mask, written in zip(model.layers, stats, masks, _masks(model)):
        k = _k(0.3, s.size)
        expected = np.zeros(s.size, dtype=bool)
        expected[np.argsort(-s.reshape(-1), kind="stable")[:k]] = True
        assert np.array_equal(written.reshape(-1), expected)
        assert np.array_equal(mask, written) and written.shape == tuple(layer.values.shape)
    assert selector.ratios == [0.3] * 3


def test_get_bottom_and_per_layer_ratios(rng):
    model = _model()
    selector = ParameterSelector(model)
    selector.get_absolute_values()
    selector.get_top(0.5)
    before = _masks(model)
    masks = selector.get_bottom(layers=[0.25, None, 0.0])
    after = _masks(model)
    weights = [np.abs(to_host(layer.weights)) for layer in model.layers]
    k = _k(0.25, weights[0].size)
    assert after[0].sum() == k and weights[0][after[0]].max() <= np.sort(weights[0].reshape(-1))[k - 1]
    assert masks[1] is None and np.array_equal(after[1], before[1])  # None: left as it was
    assert after[2].shape == (8, 5) and not after[2].any()  # 0 selects nothing (bug 35)
    assert selector.ratios == [0.25, 0.5, 0.0]  # the per-layer ratios are recorded (bug 32)


def test_nan_and_pruned_weights_are_never_candidates(rng):
    model = _model()
    model.layers[0].keep_only(rng.random((12, 10)) < 0.5)  # prune about half of layer 0
    selector = ParameterSelector(model)
    stats = [rng.random(layer.values.shape) for layer in model.layers]
    stats[1][:3] = np.nan  # the first 3 rows: 24 of the 80 weights
    selector.set_statistics(stats)
    for method in (selector.get_top, selector.get_bottom, selector.get_random):
        method(1.0)
        masks = _masks(model)
        present = to_host(model.layers[0].prune_mask)
        assert np.array_equal(masks[0], present)  # ratio 1 = every candidate, no pruned weight
        assert not masks[1][:3].any() and masks[1][3:].all()
        method(0.5)
        assert _masks(model)[0].sum() == _k(0.5, present.sum())  # ratio of the candidates
        assert _masks(model)[1].sum() == _k(0.5, 56)
    plain = ParameterSelector(model, seed=0)  # get_random needs no statistics: present weights only
    masks = plain.get_random(layers=[1.0, 0.5, None])
    assert np.array_equal(masks[0], present) and masks[1].sum() == 40 and masks[2] is None


@pytest.mark.parametrize("sparse", [False, True])
def test_subsets_are_disjoint_and_every_id_works(sparse):
    model = _model(sparse)
    selector = ParameterSelector(model, seed=3)
    selector.get_absolute_values()
    ids = selector.initialize_subsets(3)
    union = [np.zeros(layer.values.shape, dtype=bool) for layer in model.layers]
    for s in range(3):  # id 0 included (bug 34)
        selector.get_top(1.0, subset=s)
        for i, mask in enumerate(_masks(model)):
            assert np.array_equal(mask, ids[i] == s)
            assert not (mask & union[i]).any()
            union[i] |= mask
        selector.get_top(0.5, subset=s)
        for i, mask in enumerate(_masks(model)):
            members = ids[i] == s
            assert mask.sum() == _k(0.5, members.sum()) and not (mask & ~members).any()
    assert all(u.all() for u in union)
    sizes = [np.bincount(i.reshape(-1), minlength=3) for i in ids]
    assert all(s.max() - s.min() <= 1 for s in sizes)  # balanced


def test_gaussian_selection_is_biased_to_the_top_and_honours_layer_ratios(rng):
    model = _model()
    selector = ParameterSelector(model, seed=0)
    stats = [rng.permutation(layer.values.size).reshape(layer.values.shape).astype(float)
             for layer in model.layers]
    selector.set_statistics(stats)
    masks = selector.get_top_gaussian(layers=[0.2, 0.1, None], std=0.1)  # bug 33: per-layer ratios used
    assert [int(m.sum()) for m in masks[:2]] == [_k(0.2, 120), _k(0.1, 80)] and masks[2] is None
    mean_top = [stats[i][masks[i]].mean() / stats[i].size for i in range(2)]
    assert all(m > 0.7 for m in mean_top)  # uniform would give about 0.5
    tiny = selector.get_top_gaussian(0.25, std=1e-12)  # bug 36: the original looped forever
    assert all(np.array_equal(t, s >= s.size - _k(0.25, s.size)) for t, s in zip(tiny, stats))
    again = ParameterSelector(model, seed=0)
    again.set_statistics(stats)
    assert all(np.array_equal(a, b) for a, b in
               zip(again.get_top_gaussian(layers=[0.2, 0.1, None], std=0.1)[:2], masks[:2]))


@pytest.mark.parametrize("sparse", [False, True])
def test_add_output_class(sparse):
    model = _model(sparse)
    selector = parameter_selector(model)
    selector.get_absolute_values()
    selector.get_top(layers=[None, None, 0.0])
    selector.add_output_class(3)
    head = model.layers[-1]
    units = np.asarray(head.value_keys()) % head.size
    mask = to_host(head.training_mask).reshape(-1)
    assert np.array_equal(mask, units == 3)
    if sparse:
        rows = np.repeat(np.arange(head.size), np.diff(head.to_scipy().indptr))  # CSR (n_out, n_in) order
        assert np.array_equal(mask, rows == 3) and mask.any()
    else:
        assert mask.reshape(8, 5)[:, 3].all() and mask.reshape(8, 5).sum() == 8
    selector.add_output_class([0, 4])
    selector.get_bottom(0.0)  # a later selection keeps the output classes trainable
    mask = to_host(head.training_mask).reshape(-1)
    assert np.array_equal(mask, np.isin(units, [0, 3, 4]))
    assert selector.output_classes == [0, 3, 4]
    for bad in (5, -1, 2.0, True, [1, 7]):
        with pytest.raises(ValueError, match="output class"):
            selector.add_output_class(bad)


def test_print_ratios_and_clear_masks(capsys):
    model = _model()
    selector = ParameterSelector(model)
    selector.get_absolute_values()
    selector.get_top(layers=[0.5, 0.25, 0.0])
    selector.add_output_class(1)
    selector.print_ratios()
    out = capsys.readouterr().out
    assert "[0.5, 0.25, 0.0]" in out and "[1]" in out
    assert selector.trainable_fractions() == [0.5, 0.25, 0.2]
    selector.clear_masks()
    assert all(layer.training_mask is None for layer in model.layers)
    assert selector.ratios == [None] * 3 and selector.output_classes == []
    selector.print_ratios()
    assert "No output class" in capsys.readouterr().out


def test_bad_input_raises_clearly(rng):
    model = _model()
    selector = ParameterSelector(model)
    with pytest.raises(RuntimeError, match="statistics"):
        selector.get_top(0.5)  # nothing computed yet
    selector.get_absolute_values()
    for ratio in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="ratio"):
            selector.get_top(ratio)
    with pytest.raises(ValueError, match="one ratio"):
        selector.get_bottom(layers=[0.1, 0.2])
    with pytest.raises(ValueError, match=r"layers\[1\]"):
        selector.get_bottom(layers=[0.1, 2.0, None])
    with pytest.raises(ValueError, match="either ratio"):
        selector.get_top(0.1, layers=[0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="either ratio"):
        selector.get_top()
    with pytest.raises(ValueError, match="initialize_subsets"):
        selector.get_top(0.1, subset=0)
    selector.initialize_subsets(2)
    for bad in (2, -1, 0.5):
        with pytest.raises(ValueError, match="subset"):
            selector.get_top(0.1, subset=bad)
    with pytest.raises(ValueError, match="std"):
        selector.get_top_gaussian(0.1)
    with pytest.raises(ValueError, match="subsets"):
        selector.initialize_subsets(0)
    with pytest.raises(ValueError, match="statistics"):
        selector.set_statistics([np.ones((12, 10))])


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("make", [
    lambda m: sa.SelectedAdamOptimizer(m, 0.05),
    lambda m: sa.SelectedSGDOptimizer(m, 0.05, momentum=0.9, train_biases=False),
])
def test_selected_training_leaves_unselected_weights_bit_for_bit(rng, sparse, make):
    model = _model(sparse)
    selector = ParameterSelector(model, seed=1)
    x = rng.random((64, SIZES[0]))
    labels = rng.integers(0, 5, 64)
    selector.get_MAAV(x)
    selector.get_bottom(layers=[0.3, 0.0, 0.2])  # layer 1: nothing selected
    selector.add_output_class(2)
    masks = _masks(model)
    assert not masks[1].any()
    before = [to_host(layer.values).copy() for layer in model.layers]
    optimizer = make(model)
    for step in range(40):
        batch = rng.integers(0, 64, 16)
        optimizer.train_step(x[batch], labels[batch])
    for mask, old, layer in zip(masks, before, model.layers):
        new = to_host(layer.values)
        assert np.array_equal(new[~mask], old[~mask])  # bit for bit
        if mask.any():  # selected ones did train (not all: inputs dead on x get no gradient)
            assert (new[mask] != old[mask]).any()
