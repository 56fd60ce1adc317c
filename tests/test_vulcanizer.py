"""The vulcanizer (split, revert, mind meld) and the column choosers, against plain loops."""

import pickle

import numpy as np
import pytest

import sparana as sa
from conftest import build_model
from sparana.sparsity._columns import get_max_columns, get_normal_columns, get_random_columns
from sparana.compose._vulcanizer import Vulcanizer

SIZES = [9, 8, 7, 6, 4]
ACTIVATIONS = ["relu", "relu", "relu", "linear"]


def make(sparse=False, masked=False, seed=0, dtype="float64"):
    model = build_model(SIZES, ACTIVATIONS, sparse=sparse, density=0.6, seed=seed, dtype=dtype)
    if masked:
        rng = np.random.default_rng(seed + 7)
        for layer in model.layers[1:]:
            layer.keep_only(rng.random(layer.values.shape) < 0.7)
    return model


def snapshot(model):
    return [(layer.dense_weights().copy(), layer.biases.copy()) for layer in model.layers]


def present(layer):
    """Boolean (n_in, n_out): where the layer has a weight (not pruned, stored)."""
    mask = np.zeros((layer.input_size, layer.size), dtype=bool)
    mask.reshape(-1)[layer.value_keys()] = True
    if layer.prune_mask is not None:
        mask &= layer.prune_mask
    return mask


def expected_meld(before, main, vulcanizer, submodels):
    """The main model's (W, b) after melding ``submodels``, by the ownership rule, with plain loops."""
    weights = [w.copy() for w, _ in before]
    biases = [b.copy() for _, b in before]
    owned = [np.zeros(w.shape, dtype=int) for w in weights]
    sums = [np.zeros(w.shape) for w in weights]
    bias_owned = [np.zeros(b.shape, dtype=int) for b in biases]
    bias_sums = [np.zeros(b.shape) for b in biases]
    for sub in submodels:
        plan = vulcanizer.plan(sub)
        for i, layer in enumerate(sub.layers):
            l = plan.start + i
            w_sub = layer.dense_weights()
            rows = range(main.layers[l].input_size) if i == 0 else plan.chosen[i - 1]
            cols = range(main.layers[l].size) if i == sub.depth - 1 else plan.chosen[i]
            for a, j in enumerate(rows):
                for c, k in enumerate(cols):
                    owned[l][j, k] += 1
                    sums[l][j, k] += w_sub[a, c]
            for c, k in enumerate(cols):
                bias_owned[l][k] += 1
                bias_sums[l][k] += layer.biases[c]
    for l in range(len(weights)):
        hit = owned[l] > 0
        weights[l][hit] = sums[l][hit] / owned[l][hit]
        weights[l] *= present(main.layers[l])
        hit = bias_owned[l] > 0
        biases[l][hit] = bias_sums[l][hit] / bias_owned[l][hit]
    return weights, biases, owned


def assert_model_equals(model, weights, biases):
    for layer, w, b in zip(model.layers, weights, biases):
        np.testing.assert_array_equal(layer.dense_weights(), w)
        np.testing.assert_array_equal(layer.biases, b)


def train(sub, vulcanizer, steps=4, seed=0, optimizer=sa.AdamOptimizer):
    rng = np.random.default_rng(seed)
    opt = optimizer(sub, 0.05)
    for _ in range(steps):
        x = vulcanizer.submodel_inputs(sub, rng.random((16, SIZES[0])))
        opt.train_step(x, rng.integers(0, SIZES[-1], 16))
        vulcanizer.revert_weights(sub)


# ------------------------------------------------------------ column choosers
def walk_columns(matrix, count):
    """The original's walk: entries by descending value, first-seen distinct columns (NaN skipped)."""
    flat = matrix.reshape(-1)
    found = []
    for position in np.argsort(-flat, kind="stable"):
        if np.isnan(flat[position]):
            continue
        column = position % matrix.shape[1]
        if column not in found:
            found.append(column)
    found += [c for c in range(matrix.shape[1]) if c not in found]  # columns without entries: last
    return found[:count]


def test_max_columns_follow_the_walk_over_the_largest_weights(rng):
    for trial in range(20):
        matrix = rng.standard_normal((7, 9)).round(1)  # rounding makes ties
        matrix[rng.random(matrix.shape) < 0.3] = np.nan
        matrix[:, trial % 9] = np.nan  # a column with no weight at all
        for count in (0, 1, 4, 9):
            assert get_max_columns(matrix, count).tolist() == walk_columns(matrix, count)
    planted = rng.standard_normal((6, 10))
    planted[2, [1, 5, 8]] = [10.0, 11.0, 12.0]
    assert get_max_columns(planted, 3).tolist() == [8, 5, 1]


def test_normal_and_random_columns_are_distinct_and_do_not_hang(rng):
    matrix = rng.standard_normal((20, 30))
    for std in (0.0, 1e-12, 0.05, 1.0, 1e6):
        for count in (1, 10, 30):
            chosen = get_normal_columns(matrix, count, std, rng=1)
            assert chosen.size == count and np.unique(chosen).size == count
            assert chosen.min() >= 0 and chosen.max() < 30
    # a vanishing spread means the top: exactly the 'max' choice, in its order
    np.testing.assert_array_equal(get_normal_columns(matrix, 12, 1e-12, rng=3), get_max_columns(matrix, 12))
    # biased to the top (bug 37: rank 0 used to be the smallest entry)
    top, bottom = get_max_columns(matrix, 30)[[0, -1]]
    firsts = [get_normal_columns(matrix, 1, 0.02, rng=s)[0] for s in range(200)]
    assert firsts.count(top) > 20 and firsts.count(bottom) == 0
    np.testing.assert_array_equal(get_normal_columns(matrix, 5, 0.1, rng=4), get_normal_columns(matrix, 5, 0.1, rng=4))
    chosen = get_random_columns(matrix, 30, rng=2)
    assert sorted(chosen.tolist()) == list(range(30))
    with pytest.raises(ValueError, match="columns"):
        get_max_columns(matrix, 31)
    with pytest.raises(ValueError, match="std"):
        get_normal_columns(matrix, 3, -1.0)


# ------------------------------------------------------------------ vulcanizer
@pytest.mark.parametrize("sparse, masked", [(False, False), (False, True), (True, False)])
@pytest.mark.parametrize("consolidation", ["original", "mean", "none"])
def test_split_then_meld_returns_the_original_weights_exactly(sparse, masked, consolidation, rng):
    model = make(sparse, masked, dtype="float32")
    before = snapshot(model)
    vulcanizer = Vulcanizer(model, "normal", std=0.1, seed=3)
    vulcanizer.get_average_zeros(rng.random((40, SIZES[0])))
    vulcanizer.split_model([5, 3, 4], consolidation=consolidation)
    vulcanizer.split_models(2, depth=3, consolidation=consolidation)
    vulcanizer.mind_meld()
    assert_model_equals(model, *zip(*before))


@pytest.mark.parametrize("sparse, masked", [(False, False), (False, True), (True, False), (True, True)])
def test_a_submodel_is_a_smaller_model_of_the_same_kind(sparse, masked, rng):
    model = make(sparse, masked)
    vulcanizer = Vulcanizer(model, "max", seed=0)
    sub = vulcanizer.split_model([5, 3, 4])
    assert sub.input_size == SIZES[1] and sub.sizes == [SIZES[1], 6, 4, 4]
    assert sub.comp_type == model.comp_type and sub.dtype == model.dtype
    for main_layer, layer in zip(model.layers[1:], sub.layers):
        assert type(layer) is type(main_layer)
    plan = vulcanizer.plan(sub)
    assert [c.tolist() for c in vulcanizer.chosen_units(sub)] == [sorted(c.tolist()) for c in plan.chosen]
    # the chosen weights (of the submodel's real units) are the main model's
    for i, layer in enumerate(sub.layers):
        rows = np.arange(SIZES[1]) if i == 0 else plan.chosen[i - 1]
        cols = np.arange(SIZES[-1]) if i == 2 else plan.chosen[i]
        main = model.layers[1 + i]
        block = layer.dense_weights()[:rows.size, :cols.size]
        np.testing.assert_array_equal(block, main.dense_weights()[np.ix_(rows, cols)])
        np.testing.assert_array_equal(present(layer)[:rows.size, :cols.size], present(main)[np.ix_(rows, cols)])
    # 'max' takes, in the first split layer, the units owning the largest weights
    w = np.where(present(model.layers[1]), model.layers[1].dense_weights(), np.nan)
    assert set(plan.chosen[0]) == set(walk_columns(w, 5))
    assert pickle.loads(pickle.dumps(plan)).chosen[1].tolist() == plan.chosen[1].tolist()


@pytest.mark.parametrize("sparse, masked", [(False, False), (False, True), (True, False), (True, True)])
def test_meld_after_training_writes_exactly_the_owned_weights(sparse, masked, rng):
    model = make(sparse, masked)
    before = snapshot(model)
    vulcanizer = Vulcanizer(model, "random", seed=5)
    sub = vulcanizer.split_model([4, 3, 4])
    train(sub, vulcanizer)
    for layer in sub.layers:  # pruned weights stayed pruned in the submodel
        assert np.all(layer.dense_weights()[~present(layer)] == 0)
    weights, biases, owned = expected_meld(before, model, vulcanizer, [sub])
    vulcanizer.mind_meld(sub)
    assert_model_equals(model, weights, biases)
    changed = [np.count_nonzero(w != b[0]) for w, b in zip(weights, before)]
    assert changed[0] == 0 and sum(changed) > 10  # training moved owned weights, layer 0 untouched
    for layer, (w, _), o in zip(model.layers, before, owned):  # not owned: bit for bit the same
        np.testing.assert_array_equal(layer.dense_weights()[o == 0], w[o == 0])
        assert np.all(layer.dense_weights()[~present(layer)] == 0)


@pytest.mark.parametrize("sparse", [False, True])
def test_split_models_cover_each_layer_and_meld_together(sparse, rng):
    model = make(sparse, masked=not sparse)
    before = snapshot(model)
    vulcanizer = Vulcanizer(model, "max", seed=2)
    vulcanizer.get_average_zeros(rng.random((30, SIZES[0])))
    subs = vulcanizer.split_models(3, consolidation="mean")
    for i in range(3):  # disjoint and covering
        units = np.concatenate([vulcanizer.plan(s).chosen[i] for s in subs])
        assert sorted(units.tolist()) == list(range(SIZES[1 + i]))
    ranking = get_max_columns(np.where(present(model.layers[0]), model.layers[0].dense_weights(), np.nan), 8)
    assert vulcanizer.plan(subs[0]).chosen[0].tolist() == sorted(ranking[0::3].tolist())  # round-robin
    for n, sub in enumerate(subs):
        train(sub, vulcanizer, seed=n)
    weights, biases, owned = expected_meld(before, model, vulcanizer, subs)
    assert owned[-1].max() == 1 and owned[0].max() == 1  # weights are owned once; final biases are shared
    vulcanizer.mind_meld(subs)
    for layer, w, b in zip(model.layers, weights, biases):
        np.testing.assert_array_equal(layer.dense_weights(), w)
        np.testing.assert_allclose(layer.biases, b, rtol=1e-14)
    final = np.mean([s.layers[-1].biases for s in subs], axis=0)
    np.testing.assert_allclose(model.layers[-1].biases, final, rtol=1e-14)


def test_meld_accepts_trained_parameters_as_arrays(rng):
    model, twin = make(), make()
    vulcanizer, other = Vulcanizer(model, "random", seed=1), Vulcanizer(twin, "random", seed=1)
    subs, twin_subs = vulcanizer.split_models(2, depth=3), other.split_models(2, depth=3)
    for n, sub in enumerate(subs):
        train(sub, vulcanizer, seed=n)
    parameters = [[(layer.values.copy(), layer.biases.copy()) for layer in s.layers] for s in subs]
    vulcanizer.mind_meld()
    other.mind_meld([0, 1], parameters=pickle.loads(pickle.dumps(parameters)))
    assert_model_equals(twin, *zip(*snapshot(model)))
    assert len(twin_subs) == 2


def test_revert_weights_restores_the_consolidation_units(rng):
    model = make(dtype="float32")
    vulcanizer = Vulcanizer(model, "max", seed=0)
    sub = vulcanizer.split_model([4, 3, 4], data=rng.random((20, SIZES[0])))
    plan = vulcanizer.plan(sub)
    start = [(layer.values.copy(), layer.biases.copy()) for layer in sub.layers]
    opt = sa.SGDOptimizer(sub, 0.5)
    opt.train_step(vulcanizer.submodel_inputs(sub, rng.random((16, SIZES[0]))), rng.integers(0, 4, 16))
    moved = [np.count_nonzero(layer.values.reshape(-1)[i] != v[0].reshape(-1)[i])
             for layer, i, v in zip(sub.layers, plan.fixed_index, start)]
    assert sum(moved) > 0  # the step moved consolidation weights ...
    vulcanizer.revert_weights()
    for layer, index, (values, biases), bias in zip(sub.layers, plan.fixed_index, start, plan.fixed_biases):
        np.testing.assert_array_equal(layer.values.reshape(-1)[index], values.reshape(-1)[index])  # ... reverted
        if bias is not None:
            assert layer.biases[-1] == biases[-1]
    assert any(not np.array_equal(layer.values, v) for layer, (v, _) in zip(sub.layers, start))  # real ones learnt


@pytest.mark.parametrize("sparse", [False, True])
def test_consolidation_units_follow_their_formulas(sparse, rng):
    model = make(sparse)
    vulcanizer = Vulcanizer(model, "random", seed=6)
    zeros = vulcanizer.get_average_zeros(rng.standard_normal((30, SIZES[0])))
    means = vulcanizer.mean_activations
    w = [layer.dense_weights() for layer in model.layers]
    b = [layer.biases for layer in model.layers]
    for consolidation in ("original", "mean"):
        sub = vulcanizer.split_model([4, 3, 4], consolidation=consolidation)
        c0, c1 = vulcanizer.plan(sub).chosen
        r0, r1 = (np.setdiff1d(np.arange(n), c) for n, c in ((SIZES[2], c0), (SIZES[3], c1)))
        s0, s1, s2 = (layer.dense_weights() for layer in sub.layers)
        if consolidation == "original":  # z * row-sums in, mean of the removed rows out
            row0 = w[2][r0].mean(axis=0)
            np.testing.assert_allclose(s0[:, -1], zeros[1] * w[1][:, r0].sum(axis=1))
            assert sub.layers[0].biases[-1] == pytest.approx(zeros[1] * b[1][r0].sum())
            np.testing.assert_allclose(s1[:-1, -1], zeros[2] * w[2][np.ix_(c0, r1)].sum(axis=1))
            assert s1[-1, -1] == pytest.approx(zeros[2] * row0[r1].sum())
            np.testing.assert_allclose(s2[-1], w[3][r1].mean(axis=0))
        else:  # a constant unit carrying the removed units' mean contribution
            row0 = means[1][r0] @ w[2][r0] / means[1][r0].sum()
            np.testing.assert_array_equal(s0[:, -1], 0)
            assert sub.layers[0].biases[-1] == pytest.approx(means[1][r0].sum())
            np.testing.assert_allclose(s2[-1], means[2][r1] @ w[3][r1] / means[2][r1].sum())
        np.testing.assert_allclose(s1[-1, :-1], row0[c1])


@pytest.mark.parametrize("sparse", [False, True])
def test_consolidation_units_start_closer_to_the_main_model(sparse, rng):
    data = rng.random((200, SIZES[0]))

    def distance(model, consolidation, sizes):
        vulcanizer = Vulcanizer(model, "random", seed=4)
        if consolidation == "mean":
            vulcanizer.get_average_zeros(data)  # (for 'original': z = 1, the plain sums)
        sub = vulcanizer.split_model(sizes, consolidation=consolidation)
        return np.mean((sub.outputs(vulcanizer.submodel_inputs(sub, data)) - model.outputs(data)) ** 2)

    # 'mean': the removed units' mean contribution (provably closer with one split layer before a linear one)
    model = make(sparse)
    assert distance(model, "mean", [3, 4]) < 0.9 * distance(model, "none", [3, 4])
    # 'original': with every unit active (positive weights and inputs) its unit carries the removed ones
    positive = make(sparse)
    for layer in positive.layers:
        layer.values[...] = np.abs(layer.values)
    for sizes in ([3, 4], [4, 3, 4]):
        assert distance(positive, "original", sizes) < 0.9 * distance(positive, "none", sizes)


def test_get_average_zeros_matches_a_loop(rng):
    model = make()
    data = rng.standard_normal((25, SIZES[0]))
    vulcanizer = Vulcanizer(model)
    zeros = vulcanizer.get_average_zeros(data, batch_size=7)
    for i in range(model.depth):
        outputs = model.partial_outputs(data, i + 1)
        assert zeros[i] == pytest.approx(np.mean(outputs == 0))
        np.testing.assert_allclose(vulcanizer.mean_activations[i], outputs.mean(axis=0))
    assert 0 < zeros[0] < 1 and zeros[-1] == 0


def test_bad_input_raises_and_leaves_the_main_model_unchanged(rng):
    model = make(sparse=[False, False, True, False])
    before = snapshot(model)
    with pytest.raises(ValueError, match="selection_type"):
        Vulcanizer(model, "biggest")
    with pytest.raises(ValueError, match="std"):
        Vulcanizer(model, "normal")
    vulcanizer = Vulcanizer(model, seed=0)
    with pytest.raises(ValueError, match=r"main layer 2 must be in \[1, 6\]"):
        vulcanizer.split_model([5, 8, 4])
    with pytest.raises(ValueError, match="number of outputs"):
        vulcanizer.split_model([5, 3, 5])
    with pytest.raises(ValueError, match="get_average_zeros"):
        vulcanizer.split_model([5, 3, 4], consolidation="mean")
    with pytest.raises(ValueError, match="consolidation"):
        vulcanizer.split_model([5, 3, 4], consolidation="sum")
    with pytest.raises(ValueError, match="k = 9"):
        vulcanizer.split_models(9)
    with pytest.raises(ValueError, match="nothing to meld"):
        vulcanizer.mind_meld()
    sub = vulcanizer.split_model([5, 3, 4])
    train(sub, vulcanizer)
    stranger = Vulcanizer(make(), seed=0).split_model([5, 3, 4])
    with pytest.raises(ValueError, match="not split off by this vulcanizer"):
        vulcanizer.mind_meld(stranger)
    good = [(layer.values.copy(), layer.biases.copy()) for layer in sub.layers]
    bad = list(good)
    bad[1] = (good[1][0][:-1], good[1][1])
    with pytest.raises(ValueError, match=r"parameters\[0\]\[1\]"):
        vulcanizer.mind_meld(sub, parameters=[bad])
    bad[1] = (good[1][0] * np.nan, good[1][1])
    with pytest.raises(ValueError, match="NaN"):
        vulcanizer.mind_meld(sub, parameters=[bad])
    model.layers[2].keep_only(np.arange(model.layers[2].nnz) % 2 == 0)  # main pattern changed: refuse
    before = snapshot(model)
    with pytest.raises(ValueError, match="main layer 2 changed"):
        vulcanizer.mind_meld(sub)
    assert_model_equals(model, *zip(*before))
    model.convert_to_sparse([3])
    with pytest.raises(ValueError, match="main layer 2 changed"):
        vulcanizer.mind_meld(sub)
    assert_model_equals(model, *zip(*before))
    sub.convert_to_sparse([0])  # submodel changed: refuse
    with pytest.raises(ValueError, match="submodel layer 0 changed"):
        vulcanizer.revert_weights(sub)


@pytest.mark.parametrize("sparse", [False, True])
def test_a_plan_reverts_every_step_but_checks_and_uploads_once_per_pattern(sparse, rng):
    model = make(sparse, dtype="float32")
    vulcanizer = Vulcanizer(model, "max", seed=0)
    sub = vulcanizer.split_model([4, 3, 4], data=rng.random((20, SIZES[0])))
    plan = vulcanizer.plan(sub)
    checks = []
    original = plan.check_submodel
    plan.check_submodel = lambda s: checks.append(1) or original(s)
    start = [layer.values.copy() for layer in sub.layers]
    opt = sa.SGDOptimizer(sub, 0.5)
    for _ in range(3):
        opt.train_step(vulcanizer.submodel_inputs(sub, rng.random((16, SIZES[0]))), rng.integers(0, 4, 16))
        plan.revert(sub)
        for layer, index, values in zip(sub.layers, plan.fixed_index, start):
            np.testing.assert_array_equal(layer.values.reshape(-1)[index], values.reshape(-1)[index])
    assert len(checks) == sum(1 for _ in sub.layers)  # once per layer, not once per step
    sub.layers[0].training_mask = np.ones(sub.layers[0].values.shape, bool)  # a new version: checked again
    plan.revert(sub)
    assert len(checks) == sum(1 for _ in sub.layers) + 1
    del plan.check_submodel
    assert "_reverts" in plan.__dict__ and "_reverts" not in pickle.loads(pickle.dumps(plan)).__dict__
