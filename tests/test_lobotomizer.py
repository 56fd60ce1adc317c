"""Pruning: which weights go, how many, and that they stay gone."""

import tracemalloc

import numpy as np
import pytest

import sparana as sa
from conftest import build_model
from sparana.sparsity import _pruning as pruning
from sparana.sparsity._lobotomizer import Lobotomizer


def present(layer):
    keep = np.zeros((layer.input_size, layer.size), dtype=bool)
    keep.reshape(-1)[layer.value_keys()] = True
    if not layer.is_sparse and layer.prune_mask is not None:
        keep &= layer.prune_mask
    return keep


@pytest.mark.parametrize("sparse", [False, True])
def test_prune_ratio_is_incremental_and_removes_the_smallest(sparse):
    model = build_model([20, 16, 12, 4], ["relu", "relu", "linear"], sparse=sparse, density=0.8)
    lobo = Lobotomizer(model)
    before = [np.abs(layer.dense_weights()) * present(layer) for layer in model.layers]
    nnz = [present(layer).sum() for layer in model.layers]
    lobo.get_absolute_values()
    counts = lobo.prune_smallest(0.5)
    assert counts == [nnz[0] // 2, nnz[1] // 2, 0]  # final layer skipped
    for layer, w, n, c in zip(model.layers, before, nnz, counts):
        kept = present(layer)
        assert kept.sum() == n - c
        if c:  # every removed weight is no larger than every kept one
            assert w[~kept & (w > 0)].max() <= w[kept].min()
    lobo.prune_smallest(0.5)  # statistics follow the pruning: the second call prunes further
    assert [present(layer).sum() for layer in model.layers][:2] == [nnz[0] - counts[0] - (nnz[0] - counts[0]) // 2,
                                                                    nnz[1] - counts[1] - (nnz[1] - counts[1]) // 2]
    lobo.get_absolute_values()
    lobo.prune_smallest(0.5, prune_final_layer=True)
    assert present(model.layers[2]).sum() == nnz[2] - nnz[2] // 2


def test_per_layer_targets_are_cumulative():
    model = build_model([30, 20, 10, 5], ["relu", "relu", "linear"])
    lobo = Lobotomizer(model)
    lobo.get_absolute_values()
    lobo.prune_smallest(layers=[0.73, None, 0.0])
    assert [pruning.sparsity(layer) for layer in model.layers] == pytest.approx([438 / 600, 0, 0])
    lobo.prune_smallest(layers=[0.9, None, 0.5])
    assert [round(pruning.sparsity(layer), 4) for layer in model.layers] == [0.9, 0, 0.5]
    before = [layer.weights.copy() for layer in model.layers]
    assert lobo.prune_smallest(layers=[0.5, 0.0, 0.1]) == [0, 0, 0]  # below the current sparsity: nothing
    for layer, w in zip(model.layers, before):
        assert np.array_equal(layer.weights, w)


def test_dense_and_sparse_pruning_pick_the_same_weights():
    dense = build_model([15, 12, 6], ["relu", "linear"], seed=8)
    sparse = build_model([15, 12, 6], ["relu", "linear"], seed=8)
    sparse.convert_to_sparse()
    for model in (dense, sparse):
        lobo = Lobotomizer(model)
        lobo.get_absolute_values()
        lobo.prune_smallest(layers=[0.8, 0.6])
    for a, b in zip(dense.layers, sparse.layers):
        assert np.array_equal(present(a), present(b))
        np.testing.assert_array_equal(a.dense_weights(), b.dense_weights())


def test_pruned_weights_stay_zero_through_training(rng):
    model = build_model([10, 12, 3], ["relu", "linear"], dtype="float32")
    lobo = Lobotomizer(model)
    lobo.get_MAAV(rng.random((40, 10)))
    lobo.prune_smallest(0.7)
    pruned = model.layers[0].weights == 0
    opt = sa.AdamOptimizer(model, 0.05)
    for _ in range(20):
        opt.train_step(rng.random((16, 10)), rng.integers(0, 3, 16))
    assert np.all(model.layers[0].weights[pruned] == 0)
    assert not np.all(model.layers[0].weights[~pruned] == 0)


def test_prune_all_negative_and_sparse_masks():
    model = build_model([8, 6, 3], ["relu", "linear"])
    lobo = Lobotomizer(model)
    counts = lobo.prune_all_negative(layers=[True, False])
    assert np.all(model.layers[0].weights >= 0) and (model.layers[1].weights < 0).any()
    assert counts[0] > 0 and counts[1] == 0
    model.layers[1].weights[0, :] = 0  # zeroed by hand
    masks = lobo.get_sparse_masks()
    assert not masks[1][0].any() and not model.layers[1].prune_mask[0].any()
    model.convert_to_sparse()
    lobo = Lobotomizer(model)
    lobo.prune_all_negative()
    assert all(np.all(layer.values >= 0) for layer in model.layers)


def test_random_and_rank_statistics_prune_only_present_weights():
    model = build_model([12, 10, 4], ["relu", "linear"])
    lobo = Lobotomizer(model, seed=3)
    lobo.get_random()
    lobo.prune_smallest(0.5)
    lobo.get_activation_ranks()
    assert np.isnan(lobo.statistics[0][model.layers[0].weights == 0]).all()
    lobo.prune_smallest(layers=[0.75, None])
    assert pruning.sparsity(model.layers[0]) == 0.75


def test_statistics_survive_a_move_of_the_model():
    """A move to another backend keeps the sparse layers' entries, so statistics computed before it
    still prune the same weights after it."""
    pruned = []
    for move in (False, True):
        model = build_model([20, 16, 4], ["relu", "linear"], sparse=True, density=0.5, seed=3)
        lobo = Lobotomizer(model)
        lobo.get_absolute_values()
        if move:
            model.convert_comp_type("CPU")  # a new Backend object, as a move to the GPU and back makes
        counts = lobo.prune_smallest(0.2)
        pruned.append((counts, [present(layer) for layer in model.layers]))
    assert pruned[1][0] == pruned[0][0] and pruned[0][0][0] > 0
    for moved, unmoved in zip(pruned[1][1], pruned[0][1]):
        np.testing.assert_array_equal(moved, unmoved)


def test_polynomial_schedule():
    targets = pruning.polynomial_schedule(0.9, 3)
    assert targets[-1] == pytest.approx(0.9) and targets == sorted(targets)
    assert targets[0] - 0 > targets[2] - targets[1]  # big steps first


def test_bad_input():
    model = build_model([6, 5, 3], ["relu", "linear"])
    lobo = Lobotomizer(model)
    with pytest.raises(RuntimeError, match="no statistics yet"):
        lobo.prune_smallest(0.5)
    lobo.get_absolute_values()
    with pytest.raises(ValueError, match=r"prune_ratio must be a number in \[0.0, 1.0\], got 1.5"):
        lobo.prune_smallest(1.5)
    with pytest.raises(ValueError, match=r"one target sparsity .* per layer expected \(2\), got 3"):
        lobo.prune_smallest(layers=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="either prune_ratio"):
        lobo.prune_smallest()
    with pytest.raises(ValueError, match=r"statistics\[0\] of shape \(6, 5\) expected"):
        lobo.set_statistics([np.ones((5, 6)), np.ones((5, 3))])
    with pytest.raises(ValueError, match="density must be a number in"):
        model.initialize_sparse_weights(1.5)


def test_a_huge_sparse_layer_trains_in_little_memory(rng):
    """20,000 x 20,000 at 0.1% density: 400k stored weights, never a dense 1.6 GB matrix."""
    tracemalloc.start()
    try:
        model = sa.Model(20000, [sa.SparseReluLayer(20000), sa.SparseLinearLayer(10)], comp_type="CPU", seed=0)
        model.initialize_sparse_weights([0.001, 0.1])
        assert model.layers[0].nnz == 400_000
        opt = sa.AdamOptimizer(model, 1e-3)
        x = rng.random((32, 20000), dtype=np.float32)
        y = rng.integers(0, 10, 32)
        first = opt.train_step(x, y)
        for _ in range(3):
            last = opt.train_step(x, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert last < first
    assert peak < 150e6, f"peak traced memory {peak / 1e6:.0f} MB"


def test_zero_statistics_are_ranked_first_or_skipped_as_the_original(rng):
    """Inputs that are zero on all the data (MNIST's border pixels) give their weights a MAAV of 0."""
    x = rng.random((50, 8))
    x[:, :2] = 0
    results = {}
    for mode in ("ranked", "skipped"):
        model = build_model([8, 6, 3], ["relu", "linear"], seed=3)
        lobo = Lobotomizer(model, zero_statistics=mode)
        stats = lobo.get_MAAV(x)
        zero = stats[0] == 0
        assert zero[:2].all() and not zero[2:].any()  # 12 weights with a zero statistic, 36 live ones
        live_stats = np.where(zero, np.inf, stats[0])
        counts = lobo.prune_smallest(0.25)
        results[mode] = (counts[0], ~model.layers[0].prune_mask, zero, live_stats)
    count, removed, zero, _ = results["ranked"]
    assert count == 12 and np.array_equal(removed, zero)  # a quarter of all 48: the zero-statistic ones
    count, removed, zero, live_stats = results["skipped"]
    assert count == 9  # the original: a quarter of the 36 weights with a non-zero statistic
    assert not (removed & zero).any()  # never pruned
    assert np.array_equal(np.sort(live_stats[removed]), np.sort(live_stats.reshape(-1))[:9])

    # Per-layer targets: the original counted zero-statistic weights as already pruned.
    for mode, count, zeros_removed in (("ranked", 24, 12), ("skipped", 12, 0)):
        model = build_model([8, 6, 3], ["relu", "linear"], seed=3)
        lobo = Lobotomizer(model, zero_statistics=mode)
        zero = lobo.get_MAAV(x)[0] == 0
        counts = lobo.prune_smallest(layers=[0.5, None])
        removed = ~model.layers[0].prune_mask
        assert counts[0] == count
        assert int(removed[~zero].sum()) == 12  # either way 12 live weights go
        assert int(removed[zero].sum()) == zeros_removed
    with pytest.raises(ValueError, match=r"zero_statistics must be one of \('ranked', 'skipped'\)"):
        Lobotomizer(model, zero_statistics="first")
