"""Optimizer updates against plain formulas, and what each optimizer must leave alone."""

import numpy as np
import pytest

import sparana as sa
from conftest import build_model


def batch(rng, n=16, width=6, classes=3):
    return rng.random((n, width)), rng.integers(0, classes, n)


def snapshot(model):
    return [(layer.values.copy(), layer.biases.copy()) for layer in model.layers]


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("l1,l2", [(0.0, 0.0), (0.01, 0.0), (0.0, 0.1), (0.01, 0.1)])
def test_sgd_step_is_w_minus_lr_g(sparse, l1, l2, rng):
    model = build_model([6, 5, 3], ["relu", "linear"], sparse=sparse)
    x, y = batch(rng)
    grads = model.gradients(x, y, "cross_entropy", l1, l2)
    before = snapshot(model)
    sa.SGDOptimizer(model, 0.5, l1_constant=l1, l2_constant=l2).train_step(x, y)
    for layer, (w, b), (gw, gb) in zip(model.layers, before, grads):
        np.testing.assert_allclose(layer.values, w - 0.5 * gw, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(layer.biases, b - 0.5 * gb, rtol=1e-12, atol=1e-14)  # biases always train


def test_original_decoupled_regularisation(rng):
    model = build_model([6, 5, 3], ["relu", "linear"])
    x, y = batch(rng, n=8)
    grads = model.gradients(x, y)
    before = snapshot(model)
    sa.SGDOptimizer(model, 0.5, l1_constant=0.3, l2_constant=0.2, regularization="original").train_step(x, y)
    for layer, (w, b), (gw, gb) in zip(model.layers, before, grads):
        expected = w - 0.5 * gw - 0.5 * 0.2 / 8 * w - 0.5 * 0.3 / 8 * np.sign(w)
        np.testing.assert_allclose(layer.values, expected, rtol=1e-12)
        np.testing.assert_allclose(layer.biases, b - 0.5 * gb, rtol=1e-12)


def test_adam_three_steps_match_reference(rng):
    model = build_model([6, 5, 3], ["relu", "linear"])
    x, y = batch(rng)
    reference = build_model([6, 5, 3], ["relu", "linear"])
    opt = sa.AdamOptimizer(model, 0.01, epsilon=1e-3, clip=1.0, loss="quadratic")
    params = [p for layer in reference.layers for p in (layer.values, layer.biases)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for t in range(1, 4):
        grads = [g for pair in reference.gradients(x, y, "quadratic") for g in pair]
        step = 0.01 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        for i, p in enumerate(params):
            g = np.clip(grads[i], -1, 1)
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g * g
            p[...] -= step * m[i] / (np.sqrt(v[i]) + 1e-3)
        opt.train_step(x, y)
        for a, b in zip(model.layers, reference.layers):
            np.testing.assert_allclose(a.values, b.values, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(a.biases, b.biases, rtol=1e-10, atol=1e-12)


OPTIMIZERS = {
    "sgd": lambda m: sa.SGDOptimizer(m, 0.1, l1_constant=0.01),
    "momentum": lambda m: sa.SGDOptimizer(m, 0.05, momentum=0.9, l2_constant=0.01),
    "adam": lambda m: sa.AdamOptimizer(m, 0.01, l2_constant=0.01),
    "adam-original": lambda m: sa.AdamOptimizer(m, 0.01, l1_constant=0.1, l2_constant=0.1, clip=1.0,
                                                regularization="original"),
    "madadad": lambda m: sa.MadadadOptimizer(m, 0.01, friction=0.9),
    "madadad-l1": lambda m: sa.MadadadOptimizer(m, 0.01, friction=0.9, l1_constant=0.01),
    "adadad": lambda m: sa.AdadadOptimizer(m, 0.01, friction=0.5),
    "adadad-l2": lambda m: sa.AdadadOptimizer(m, 0.01, friction=0.5, momentum=0.5, l2_constant=0.1),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_learns_and_keeps_pruned_weights_at_zero(name, rng):
    model = build_model([6, 12, 3], ["relu", "linear"], seed=2, dtype="float32")
    keep = rng.random((6, 12)) < 0.5
    model.layers[0].keep_only(keep)
    x, y = batch(rng, n=60)
    y = (x[:, 0] > 0.5).astype(int) + (x[:, 1] > 0.5)
    opt = OPTIMIZERS[name](model)
    first = model.loss(x, y)
    for _ in range(60):
        opt.train_step(x, y)
    assert model.loss(x, y) < first
    assert np.all(model.layers[0].weights[~keep] == 0)


def test_sparse_training_never_changes_the_pattern(rng):
    model = build_model([8, 7, 3], ["relu", "linear"], sparse=True, density=0.3, dtype="float32")
    keys = [layer.value_keys().copy() for layer in model.layers]
    opt = sa.AdamOptimizer(model, 0.01, l1_constant=0.01)
    x, y = batch(rng, width=8)
    for _ in range(20):
        opt.train_step(x, y)
    for layer, k in zip(model.layers, keys):
        assert np.array_equal(layer.value_keys(), k)
        assert layer.values.size == k.size


def test_selected_training_touches_only_the_masked_weights(rng):
    model = build_model([6, 8, 5, 3], ["relu", "relu", "linear"], dtype="float32")
    masks = [rng.random(layer.values.shape) < 0.2 for layer in model.layers]
    for layer, mask in zip(model.layers, masks):
        layer.training_mask = mask
    before = snapshot(model)
    opt = sa.SelectedAdamOptimizer(model, 0.01, train_biases=False)
    x, y = batch(rng)
    for _ in range(25):
        opt.train_step(x, y)
    for layer, mask, (w, b) in zip(model.layers, masks, before):
        assert np.array_equal(layer.values[~mask], w[~mask])  # bit for bit
        assert not np.array_equal(layer.values[mask], w[mask])
        assert np.array_equal(layer.biases, b)
    sizes = {key: a.size for key, a in opt.state_arrays().items()}
    for i, mask in enumerate(masks):
        assert sizes[(i, "weights", "m")] == mask.sum()  # moments only where training happens


def test_backward_layers_and_train_final_layer(rng):
    model = build_model([6, 8, 5, 3], ["relu", "relu", "linear"])
    model.layers[1].training_mask = np.zeros((8, 5), dtype=bool)
    before = snapshot(model)
    opt = sa.SelectedSGDOptimizer(model, 0.1, backward_layers=2, train_final_layer=True)
    x, y = batch(rng)
    hidden = model.partial_outputs(x, 2)
    opt.train_step(x, y)
    assert np.array_equal(model.layers[0].values, before[0][0])
    assert np.array_equal(model.layers[0].biases, before[0][1])
    assert np.array_equal(model.layers[1].values, before[1][0])  # empty mask
    assert not np.array_equal(model.layers[1].biases, before[1][1])  # biases follow train_biases
    alive = (hidden > 0).any(axis=0)  # inputs of the final layer that were ever active
    changed = model.layers[2].values != before[2][0]
    assert changed[alive].all() and not changed[~alive].any()  # the whole final layer trains, unmasked
    with pytest.raises(ValueError, match="layer 0 has no training mask"):
        sa.SelectedAdamOptimizer(model, 0.1).train_step(x, y)
    with pytest.raises(ValueError, match="backward_layers must be an integer in"):
        sa.AdamOptimizer(model, 0.1, backward_layers=4)


def test_moments_follow_the_entries_through_pruning(rng):
    model = build_model([6, 8, 3], ["relu", "linear"])
    opt = sa.AdamOptimizer(model, 0.01)
    x, y = batch(rng)
    opt.train_step(x, y)
    m_before = opt.state_arrays()[(0, "weights", "m")].reshape(6, 8).copy()
    keep = rng.random((6, 8)) < 0.5
    model.layers[0].keep_only(keep)
    opt._slot(0, model.layers[0], "weights")
    m_after = opt.state_arrays()[(0, "weights", "m")]
    np.testing.assert_array_equal(m_after, m_before[keep])
    model.convert_to_sparse()
    opt._slot(0, model.layers[0], "weights")
    m_sparse = opt.state_arrays()[(0, "weights", "m")]
    expected = m_before.reshape(-1)[model.layers[0].value_keys()]
    np.testing.assert_array_equal(m_sparse, expected)


def test_madadad_and_adadad_follow_their_spec(rng):
    model = build_model([4, 2], ["linear"])
    x, y = batch(rng, n=5, width=4, classes=2)
    w = model.layers[0].values.copy()
    accumulator = np.zeros_like(w)
    opt = sa.MadadadOptimizer(model, 0.1, friction=0.5, train_biases=False)
    for _ in range(3):
        g = model.gradients(x, y)[0][0]
        d = -np.sign(g)
        accumulator = 0.5 * accumulator * (np.sign(accumulator) == d) + d
        w = w - 0.1 * g * np.abs(accumulator)
        opt.train_step(x, y)
        np.testing.assert_allclose(model.layers[0].values, w, rtol=1e-12)

    model = build_model([4, 2], ["linear"])
    w = model.layers[0].values.copy()
    accumulator = np.zeros_like(w)
    opt = sa.AdadadOptimizer(model, 0.1, friction=0.5, momentum=0.7, train_biases=False)
    for step in range(1, 13):
        g = model.gradients(x, y)[0][0]
        w = w - 0.1 * (g + 0.7 * accumulator)
        accumulator = 0.5 * accumulator * (g * accumulator > -1e-7) + g
        if step < 10:
            accumulator[...] = 0
        opt.train_step(x, y)
        np.testing.assert_allclose(model.layers[0].values, w, rtol=1e-12)


@pytest.mark.parametrize("sparse", [False, True])
def test_state_dict_round_trip_continues_identically(sparse, rng):
    x, y = batch(rng)
    keep = rng.random((8, 3)) < 0.8
    runs = []
    for resume in (False, True):
        model = build_model([6, 8, 3], ["relu", "linear"], sparse=sparse, seed=4)
        if not sparse:
            model.layers[-1].keep_only(keep)
        opt = sa.AdamOptimizer(model, 0.01)
        for _ in range(3):
            opt.train_step(x, y)
        if resume:
            state = opt.state_dict()
            opt = sa.AdamOptimizer(model, 0.01)
            opt.load_state_dict(state)
        for _ in range(3):
            opt.train_step(x, y)
        runs.append([layer.values.copy() for layer in model.layers])
    for a, b in zip(*runs):
        assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="state of a SGDOptimizer expected"):
        sa.SGDOptimizer(model, 0.1).load_state_dict(state)


# ------------------------------------------------------------ moving between devices
class _Moved(np.ndarray):
    """An array made by the backend a model moved to (a stand-in for the GPU, on the CPU)."""


class _MovedBackend(sa.Backend):
    def asarray(self, array, dtype=None, copy=False):
        return super().asarray(array, dtype, copy).view(_Moved)

    def zeros(self, shape, dtype=None):
        return super().zeros(shape, dtype).view(_Moved)


@pytest.mark.parametrize("sparse", [False, True])
def test_optimizer_state_moves_with_the_model(sparse, rng, monkeypatch):
    from sparana.nn import _surgery

    model = build_model([6, 8, 3], ["relu", "linear"], sparse=sparse)
    opt = sa.AdamOptimizer(model, 0.01)
    x, y = batch(rng)
    for _ in range(2):
        opt.train_step(x, y)
    before = opt.state_arrays()
    versions = [layer.version for layer in model.layers]
    monkeypatch.setattr(_surgery, "Backend", _MovedBackend)
    model.convert_comp_type("CPU")
    assert all(layer.version > v for layer, v in zip(model.layers, versions))  # optimizers see the move
    for i, kind in list(opt._slots):
        slot = opt._slot(i, model.layers[i], kind)
        for name, array in slot.state.items():
            assert isinstance(array, _Moved), f"layer {i} {kind} {name} stayed on the old device"
            np.testing.assert_array_equal(array, before[(i, kind, name)])  # preserved, not reset


@pytest.mark.parametrize("sparse", [False, True])
def test_training_continues_identically_after_convert_comp_type(sparse, rng):
    x, y = batch(rng)
    runs = []
    for move in (False, True):
        model = build_model([6, 8, 3], ["relu", "linear"], sparse=sparse, seed=4)
        opt = sa.AdamOptimizer(model, 0.01)
        for step in range(4):
            if move and step == 2:
                model.convert_comp_type("CPU")  # a new Backend object, as a move to the GPU and back makes
            opt.train_step(x, y)
        runs.append((snapshot(model), opt.state_arrays()))
    (values_a, state_a), (values_b, state_b) = runs
    for (w_a, b_a), (w_b, b_b) in zip(values_a, values_b):
        assert np.array_equal(w_a, w_b) and np.array_equal(b_a, b_b)
    assert state_a.keys() == state_b.keys()
    assert all(np.array_equal(state_a[key], state_b[key]) for key in state_a)


# ------------------------------------------------------ the original, as options
def one_step(make, model, x, y):
    make(model).train_step(x, y)
    return [layer.biases.copy() for layer in model.layers]


ORIGINAL_BIAS_DECAY = {  # the original's optimizers that decayed biases too (spec sections 3.3 to 3.7)
    "adam": (lambda m, **kw: sa.AdamOptimizer(m, 0.5, **kw), True),
    "selected adam": (lambda m, **kw: sa.SelectedAdamOptimizer(m, 0.5, **kw), True),
    "madadad": (lambda m, **kw: sa.MadadadOptimizer(m, 0.5, friction=0.5, **kw), True),
    "adadad": (lambda m, **kw: sa.AdadadOptimizer(m, 0.5, friction=0.5, **kw), True),
    "sgd": (lambda m, **kw: sa.SGDOptimizer(m, 0.5, **kw), False),
}


@pytest.mark.parametrize("name", sorted(ORIGINAL_BIAS_DECAY))
@pytest.mark.parametrize("l1,l2", [(0.0, 0.2), (0.3, 0.2), (0.3, 0.0)])
def test_original_regularisation_decays_the_biases_where_the_original_did(name, l1, l2, rng):
    make, decays = ORIGINAL_BIAS_DECAY[name]
    x, y = batch(rng, n=8)
    models = [build_model([6, 5, 3], ["relu", "linear"], seed=3) for _ in range(2)]
    for model in models:
        for layer in model.layers:
            layer.training_mask = np.ones(layer.values.shape, dtype=bool)
    before = [layer.biases.copy() for layer in models[0].layers]
    plain = one_step(make, models[0], x, y)
    decayed = one_step(lambda m: make(m, l1_constant=l1, l2_constant=l2, regularization="original"),
                       models[1], x, y)
    for b, p, d in zip(before, plain, decayed):
        expected = p - 0.5 * (l2 / 8 * b + l1 / 8 * np.sign(b)) if decays else p
        np.testing.assert_allclose(d, expected, rtol=1e-12, atol=1e-14)


def test_the_original_softmax_head_error_is_the_summed_cross_entropy_gradient(rng):
    model = build_model([6, 5, 4], ["relu", "softmax"], seed=5)
    x, y = rng.random((9, 6)), rng.integers(0, 4, 9)
    error = model.outputs(x) - np.eye(4)[y]  # p - Y (the original's E = Y - p, negated), summed below
    hidden = model.partial_outputs(x, 1)
    grad_w, grad_b = model.gradients(x, y, "cross_entropy", reduction="sum")[1]
    np.testing.assert_allclose(grad_b, error.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(grad_w, hidden.T @ error, rtol=1e-12)
    mean_w, _ = model.gradients(x, y, "cross_entropy")[1]
    np.testing.assert_allclose(mean_w, grad_w / 9, rtol=1e-12)
    quadratic_w, _ = model.gradients(x, y, "quadratic")[1]  # through the softmax's derivative: not the original's
    assert not np.allclose(quadratic_w, grad_w)
    # The optimizers take the reduction too.
    before = snapshot(model)
    sa.SGDOptimizer(model, 0.1, reduction="sum").train_step(x, y)
    np.testing.assert_allclose(model.layers[1].values, before[1][0] - 0.1 * grad_w, rtol=1e-12)
    with pytest.raises(ValueError, match=r"reduction must be one of \('mean', 'sum'\) or None"):
        sa.AdamOptimizer(model, 0.1, reduction="median")
