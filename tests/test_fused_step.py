"""The compiled training step (sparana.nn._fused) against the layer-by-layer path it stands in for."""

import numpy as np
import pytest
from conftest import build_model
from test_kernels import kernel_mode

import sparana as sa

SIZES = [30, 40, 24, 5]
ACTIVATIONS = ["relu", "relu", "linear"]
SPARSE = [True, True, False]


def twin_models(head="linear", dtype="float64", density=0.3):
    """Two identical models: sparse ReLU layers under a dense head."""
    return [build_model(SIZES, ACTIVATIONS[:-1] + [head], sparse=SPARSE, density=density, dtype=dtype, seed=3)
            for _ in range(2)]


def batches(rng, count, batch=37, dtype=np.float64):
    return [(rng.standard_normal((batch, SIZES[0])).astype(dtype), rng.integers(0, SIZES[-1], batch))
            for _ in range(count)]


def train_both(make_optimizer, data, head="linear", dtype="float64"):
    """Train twin models on ``data``, one compiled, one layer by layer; return (models, optimizers, losses)."""
    models = twin_models(head, dtype)
    optimizers = [make_optimizer(model) for model in models]
    optimizers[1].compiled = False
    losses = [[o.train_step(x, y) for x, y in data] for o in optimizers]
    assert optimizers[0]._compiled_plan is not None, "the compiled step was not taken"
    assert optimizers[1]._compiled_plan is None
    return models, optimizers, losses


def assert_same_models(a, b, **tol):
    for la, lb in zip(a.layers, b.layers):
        np.testing.assert_allclose(la.values, lb.values, **tol)
        np.testing.assert_allclose(la.biases, lb.biases, **tol)


OPTIMIZERS = {
    "adam": lambda m: sa.AdamOptimizer(m, 1e-2),
    "sgd": lambda m: sa.SGDOptimizer(m, 0.1),
    "momentum": lambda m: sa.SGDOptimizer(m, 0.1, momentum=0.9),
    "penalties": lambda m: sa.AdamOptimizer(m, 1e-2, l1_constant=1e-3, l2_constant=1e-2, clip=0.05),
    "decoupled": lambda m: sa.SGDOptimizer(m, 0.1, l2_constant=1e-2, regularization="original", momentum=0.5),
    "sum, biases fixed": lambda m: sa.AdamOptimizer(m, 1e-3, reduction="sum", train_biases=False),
}


@pytest.mark.parametrize("mode", ["plain", "parallel"])
@pytest.mark.parametrize("head", ["linear", "softmax"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_compiled_step_matches_the_layer_by_layer_step(name, head, mode, rng):
    with kernel_mode(mode):
        models, optimizers, losses = train_both(OPTIMIZERS[name], batches(rng, 6), head)
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-12)
    assert_same_models(*models, rtol=1e-10, atol=1e-12)
    assert optimizers[0].steps == optimizers[1].steps == 6
    for key, array in optimizers[1].state_arrays().items():
        np.testing.assert_allclose(optimizers[0].state_arrays()[key], array, rtol=1e-10, atol=1e-12)
    for la, lb in zip(*(m.layers for m in models)):  # the gradients a step leaves behind
        np.testing.assert_allclose(la.grad_weights, lb.grad_weights, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(la.grad_biases, lb.grad_biases, rtol=1e-10, atol=1e-12)


def test_compiled_step_in_float32_matches_to_its_rounding(rng):
    models, _, losses = train_both(OPTIMIZERS["momentum"], batches(rng, 5, dtype=np.float32), dtype="float32")
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    assert_same_models(*models, rtol=1e-4, atol=1e-6)


def test_compiled_gradient_matches_finite_differences(rng):
    """One plain SGD step of rate r moves each weight by -r dL/dw: against central differences of the loss."""
    model = twin_models()[0]
    x, y = batches(rng, 1, batch=9)[0]
    before = [(layer.values.copy(), layer.biases.copy()) for layer in model.layers]
    rate = 1e-3
    sa.SGDOptimizer(model, rate).train_step(x, y)
    after = [layer.values.copy() for layer in model.layers]
    for layer, (values, biases) in zip(model.layers, before):
        layer.values[...], layer.biases[...] = values, biases
    for i, layer in enumerate(model.layers):
        gradient = (before[i][0] - after[i]) / rate
        flat = layer.values.reshape(-1)
        for p in rng.choice(flat.size, 5, replace=False):
            saved = flat[p]
            flat[p] = saved + 1e-6
            up = model.loss(x, y)
            flat[p] = saved - 1e-6
            down = model.loss(x, y)
            flat[p] = saved
            assert gradient.reshape(-1)[p] == pytest.approx((up - down) / 2e-6, rel=1e-5, abs=1e-8)


def test_bad_batches_raise_as_before_and_change_nothing(rng):
    model = twin_models()[0]
    optimizer = sa.AdamOptimizer(model, 1e-2)
    x, y = batches(rng, 1)[0]
    optimizer.train_step(x, y)
    weights = [layer.values.copy() for layer in model.layers]
    bad = x.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="inputs must be finite"):
        optimizer.train_step(bad, y)
    wrong = y.copy()
    wrong[0] = SIZES[-1]
    with pytest.raises(ValueError, match="class ids in"):
        optimizer.train_step(x, wrong)
    assert optimizer.steps == 1
    for layer, old in zip(model.layers, weights):
        np.testing.assert_array_equal(layer.values, old)


@pytest.mark.parametrize("change", ["dropout", "mask", "one-hot labels", "dense hidden layer", "integer inputs",
                                    "switched off"])
def test_other_steps_take_the_layer_by_layer_path(change, rng):
    sizes, sparse = SIZES, SPARSE
    if change == "dense hidden layer":
        sparse = [True, False, False]
    model = build_model(sizes, ACTIVATIONS, sparse=sparse, density=0.3, seed=3,
                        dropout=0.2 if change == "dropout" else None)
    optimizer = sa.AdamOptimizer(model, 1e-2)
    x, y = batches(rng, 1)[0]
    if change == "mask":
        model.layers[0].training_mask = np.ones(model.layers[0].nnz, bool)
    if change == "one-hot labels":
        y = np.eye(SIZES[-1])[y]
    if change == "integer inputs":
        x = (x > 0).astype(np.int64)
    if change == "switched off":
        optimizer.compiled = False
    assert np.isfinite(optimizer.train_step(x, y))
    assert optimizer._compiled_plan is None


def test_a_rewired_or_reloaded_model_trains_on_the_new_arrays(rng):
    models = twin_models()
    optimizers = [sa.AdamOptimizer(m, 1e-2) for m in models]
    optimizers[1].compiled = False
    data = batches(rng, 8)
    for o in optimizers:
        for x, y in data[:3]:
            o.train_step(x, y)
    for m, o in zip(models, optimizers):  # the same rewiring of both
        sa.Rewirer(m, method="SET", fraction=0.3, schedule="constant", seed=5, optimizer=o).rewire()
    state = optimizers[0].state_dict()
    for o in optimizers:
        for x, y in data[3:6]:
            o.train_step(x, y)
    optimizers[0].load_state_dict(optimizers[1].state_dict())  # new state arrays under the same model
    for o in optimizers:
        for x, y in data[6:]:
            o.train_step(x, y)
    assert_same_models(*models, rtol=1e-10, atol=1e-12)
    assert state["steps"] == 3


def test_the_column_groups_start_on_cache_lines(rng):
    """Each group's columns of every activation start on a cache line (so that no line holds two
    groups' columns, which two cores would write), for batches that divide evenly and not."""
    from sparana._backend import ALIGNMENT
    from sparana.kernels import cpu_step

    for batch in (1, 37, 64, 100, 128, 129, 1000):
        starts, widths, width = cpu_step.column_groups(batch, np.float32)
        assert starts[0] == 0 and widths.sum() == batch and (widths > 0).all() and (widths <= width).all()
        assert width * 4 % ALIGNMENT == 0
    model = twin_models(dtype="float32")[0]
    optimizer = sa.SGDOptimizer(model, 0.1)
    optimizer.train_step(*batches(rng, 1, batch=128, dtype=np.float32)[0])
    for array in optimizer._compiled_plan.arrays:
        for a in array if isinstance(array, tuple) else (array,):
            if isinstance(a, np.ndarray) and a.ndim == 3 and a.size:  # (not the padding)
                assert a.ctypes.data % ALIGNMENT == 0


def test_one_thread_and_two_compute_the_same_bits(rng):
    """The column groups, not the threads, fix the rounding: a busy machine's step (one thread, both
    groups in turn) equals a quiet one's."""
    data = batches(rng, 4, dtype=np.float32)
    results = []
    for mode in ("plain", "parallel"):
        model = twin_models(dtype="float32")[0]
        optimizer = sa.AdamOptimizer(model, 1e-2)
        with kernel_mode(mode):
            losses = [optimizer.train_step(x, y) for x, y in data]
        results.append((losses, [layer.values.copy() for layer in model.layers]))
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_array_equal(a, b)
