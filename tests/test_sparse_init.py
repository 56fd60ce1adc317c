"""Sparse initialisation: weights scaled by each unit's live connections, Erdős–Rényi and ERK densities."""

import numpy as np
import pytest

import sparana as sa


def sparse_model(seed=3, sizes=(60, 40, 30), dtype="float32"):
    layers = [sa.SparseReluLayer(sizes[1]), sa.SparseLinearLayer(sizes[2])]
    return sa.Model(sizes[0], layers, comp_type="CPU", seed=seed, dtype=dtype)


def reference_values(seed, shapes, density, rule, live, dtype=np.float32):
    """The draws of initialize_sparse_weights redone by loops: positions, then one normal per weight
    times the rule's std at the weight's live fans (or the layer's full fans)."""
    rng = np.random.default_rng(seed)
    result = []
    for n_in, n_out in shapes:
        positions = np.sort(rng.choice(n_in * n_out, size=round(density * n_in * n_out), replace=False,
                                       shuffle=False))
        draws = rng.standard_normal(positions.size, dtype=dtype)
        rows, cols = positions // n_in, positions % n_in
        values = np.empty_like(draws)
        for p, (r, c) in enumerate(zip(rows, cols)):
            fan_in = int(np.sum(rows == r)) if live else n_in
            fan_out = int(np.sum(cols == c)) if live else n_out
            std = np.sqrt(3 / (fan_in + fan_out)) if rule == "Xavier" else np.sqrt(2 / fan_in)
            values[p] = draws[p] * dtype(std)
        result.append(values)
    return result


@pytest.mark.parametrize("rule", ["Xavier", "He"])
@pytest.mark.parametrize("scale", ["live", "dense"])
def test_sparse_weights_are_scaled_by_the_live_connections_or_by_the_layer(rule, scale):
    model = sparse_model()
    model.initialize_sparse_weights(0.1, rule, bias_constant=0.1, scale=scale)
    expected = reference_values(3, [(60, 40), (40, 30)], 0.1, rule, scale == "live")
    for layer, values in zip(model.layers, expected):
        assert np.allclose(layer.values, values, rtol=1e-6, atol=0)
    assert np.all(model.layers[0].biases == np.float32(0.1))


def test_the_live_scale_is_the_default_and_initialize_weights_keeps_it_on_the_pattern():
    model = sparse_model()
    model.initialize_sparse_weights(0.1)
    expected = reference_values(3, [(60, 40), (40, 30)], 0.1, "Xavier", live=True)
    assert np.allclose(model.layers[0].values, expected[0], rtol=1e-6, atol=0)
    pattern = model.layers[0].to_scipy().indices.copy()
    model.initialize_weights("Xavier")  # new values on the same pattern, still by live fans
    layer = model.layers[0]
    assert np.array_equal(layer.to_scipy().indices, pattern)
    rows, cols = layer.pattern.rows, layer.pattern.indices
    std = np.sqrt(3 / (np.bincount(rows)[rows] + np.bincount(cols, minlength=60)[cols]))
    assert 0.8 < np.std(layer.values / std) < 1.2
    model.initialize_weights("Xavier", scale="dense")
    assert 0.8 < np.std(layer.values) / np.sqrt(3 / 100) < 1.2
    with pytest.raises(ValueError, match="scale must be one of .* got 'fan_in'"):
        model.initialize_sparse_weights(0.1, scale="fan_in")


def test_erdos_renyi_by_epsilon_and_erk_densities():
    layers = [sa.SparseReluLayer(300), sa.SparseReluLayer(200), sa.SparseLinearLayer(10)]
    model = sa.Model(100, layers, comp_type="CPU", seed=0)
    densities = model.initialize_sparse_weights(None, distribution="erdos_renyi", epsilon=12)
    for layer, d in zip(model.layers, densities):
        n_in, n_out = layer.input_size, layer.size
        assert d == pytest.approx(min(1.0, 12 * (n_in + n_out) / (n_in * n_out)))
        assert layer.nnz == round(d * n_in * n_out)
    assert densities[2] == 1.0  # 200 -> 10 would need more than all its weights: dense
    erk = model.initialize_sparse_weights(0.05, distribution="erk")
    assert erk == model.initialize_sparse_weights(0.05, distribution="erdos_renyi")
    total = sum(layer.nnz for layer in model.layers)
    assert abs(total - 0.05 * (100 * 300 + 300 * 200 + 200 * 10)) < 3
    with pytest.raises(ValueError, match="epsilon sets the densities itself"):
        model.initialize_sparse_weights(0.1, distribution="erdos_renyi", epsilon=12)
    with pytest.raises(ValueError, match="distribution must be one of .* got 'gaussian'"):
        model.initialize_sparse_weights(0.1, distribution="gaussian")
    with pytest.raises(ValueError, match="epsilon must be a positive number, got -1"):
        model.initialize_sparse_weights(None, distribution="erdos_renyi", epsilon=-1)


@pytest.mark.slow
@pytest.mark.parametrize("make", [lambda m: sa.SGDOptimizer(m, 0.05, momentum=0.9),
                                  lambda m: sa.AdamOptimizer(m, 1e-3)], ids=["sgd", "adam"])
def test_the_documentation_mlp_at_1_percent_learns_from_scratch_in_one_epoch(make):
    """The issue's measurement: with weights scaled by the layer's full fans, SGD stayed at 0.1135."""
    loader = sa.Loader.from_mnist(sa.load_mnist(), seed=0, one_hot=False)
    model = sa.documentation_model(comp_type="CPU", seed=0)
    model.initialize_sparse_weights([0.01, 0.01, 0.01, 1.0], "Xavier", bias_constant=0.1)
    model.convert_to_sparse([0, 1, 2])
    model.layers[3].prune_mask = None
    optimizer = make(model)
    for _ in range(loader.training_size // 128):
        optimizer.train_step(*loader.minibatch(128))
    assert model.get_accuracy(loader.test_data(), loader.test_labels()) >= 0.91
