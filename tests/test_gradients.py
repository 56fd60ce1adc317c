"""Every gradient against central finite differences, in float64."""

import itertools

import numpy as np
import pytest

from conftest import build_model

EPS = 1e-6


def numeric_gradient(model, array, x, y, loss, l1, l2, reduction=None):
    """Central differences of model.loss over every entry of ``array`` (a view into the model)."""
    flat = array.reshape(-1)
    grad = np.zeros(flat.size)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + EPS
        plus = model.loss(x, y, loss, l1, l2, reduction)
        flat[i] = old - EPS
        minus = model.loss(x, y, loss, l1, l2, reduction)
        flat[i] = old
        grad[i] = (plus - minus) / (2 * EPS)
    return grad.reshape(array.shape)


def check_gradients(model, x, y, loss="cross_entropy", l1=0.0, l2=0.0, reduction=None):
    analytic = model.gradients(x, y, loss, l1, l2, reduction)
    for i, (layer, (g_w, g_b)) in enumerate(zip(model.layers, analytic)):
        n_w = numeric_gradient(model, layer.values, x, y, loss, l1, l2, reduction)
        n_b = numeric_gradient(model, layer.biases, x, y, loss, 0.0, 0.0, reduction)
        scale = max(1.0, np.abs(n_w).max())
        np.testing.assert_allclose(g_w, n_w, atol=1e-6 * scale, rtol=1e-5, err_msg=f"weights of layer {i}")
        np.testing.assert_allclose(g_b, n_b, atol=1e-6 * max(1.0, np.abs(n_b).max()), rtol=1e-5,
                                   err_msg=f"biases of layer {i}")


HEADS = ["linear", "softmax", "relu"]
LOSSES = ["cross_entropy", "quadratic"]
REDUCTIONS = [None, "mean", "sum"]  # None: the loss's usual one (mean for cross-entropy, sum for quadratic)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("head,loss,reduction", list(itertools.product(HEADS, LOSSES, REDUCTIONS)))
def test_gradients_every_head_loss_and_reduction(sparse, head, loss, reduction, rng):
    sizes = [int(s) for s in rng.integers(3, 8, size=4)]
    model = build_model(sizes, ["relu", "relu", head], sparse=sparse, density=0.6, seed=int(rng.integers(1000)))
    x = rng.random((5, sizes[0]))
    y = rng.integers(0, sizes[-1], size=5)
    check_gradients(model, x, y, loss, reduction=reduction)


@pytest.mark.parametrize("loss", LOSSES)
def test_sum_and_mean_reductions_differ_by_the_batch_size(loss, rng):
    model = build_model([5, 4, 3], ["relu", "softmax"], seed=2)
    x, y = rng.random((7, 5)), rng.integers(0, 3, 7)
    assert model.loss(x, y, loss, reduction="sum") == pytest.approx(7 * model.loss(x, y, loss, reduction="mean"))
    expected = {"cross_entropy": "mean", "quadratic": "sum"}[loss]
    assert model.loss(x, y, loss) == model.loss(x, y, loss, reduction=expected)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("l1,l2", [(0.01, 0.0), (0.0, 0.05), (0.02, 0.03)])
def test_gradients_with_penalties(sparse, l1, l2, rng):
    model = build_model([6, 5, 4, 3], ["relu", "linear", "linear"], sparse=sparse, seed=3)
    x = rng.random((7, 6))
    y = np.eye(3)[rng.integers(0, 3, size=7)]  # one-hot labels
    for loss in LOSSES:
        check_gradients(model, x, y, loss, l1, l2)


def test_gradients_mixed_dense_and_sparse_layers(rng):
    model = build_model([7, 6, 5, 4], ["relu", "relu", "softmax"], sparse=[True, False, True], seed=5)
    x = rng.random((4, 7))
    check_gradients(model, x, rng.integers(0, 4, size=4))


def test_gradients_hidden_softmax_and_linear_layers(rng):
    model = build_model([5, 6, 4, 3], ["softmax", "linear", "linear"], seed=9)
    x = rng.standard_normal((6, 5))
    check_gradients(model, x, rng.integers(0, 3, size=6), "quadratic")


def test_sparse_and_dense_layers_agree(rng):
    """Same weights as dense and as sparse: same outputs, same gradients at the stored entries."""
    for head in HEADS:
        model = build_model([9, 8, 7, 5], ["relu", "relu", head], sparse=True, density=0.4, seed=11)
        x = rng.random((12, 9))
        y = rng.integers(0, 5, size=12)
        sparse_out = model.outputs(x)
        sparse_grads = model.gradients(x, y, "quadratic")
        model.convert_to_dense()
        np.testing.assert_allclose(model.outputs(x), sparse_out, rtol=1e-12, atol=1e-12)
        dense_grads = model.gradients(x, y, "quadratic")
        model.convert_to_sparse()
        for layer, (gs, bs), (gd, bd) in zip(model.layers, sparse_grads, dense_grads):
            np.testing.assert_allclose(gs, gd.reshape(-1)[layer.value_keys()], rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(bs, bd, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("head", ["linear", "softmax"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_no_subnormal_number_reaches_the_gradients_of_a_confident_head(head, dtype):
    """exp() of a very negative log-probability is subnormal; products with one take the CPU's slow
    path (17x slower head gradients measured), so such probabilities count as 0."""
    model = build_model([4, 6, 3], ["relu", head], seed=3, dtype=dtype)
    x = np.ones((8, 4))
    y = np.zeros(8, dtype=int)
    tiny = np.finfo(dtype).tiny
    # logits 0, -L and -L - 3: the last two classes' probabilities fall below the smallest normal number
    gap = {"float32": 95.0, "float64": 720.0}[dtype]
    model.layers[1].set_parameters(np.zeros((6, 3)), np.array([0.0, -gap, -gap - 3]))
    outputs = np.asarray(model.outputs(x))
    subnormal = lambda a: int(((a != 0) & (np.abs(a) < tiny)).sum())  # noqa: E731
    assert subnormal(outputs) == 0
    for g_w, g_b in model.gradients(x, y):
        assert subnormal(g_w) == 0 and subnormal(g_b) == 0
    # and the change is below the square root of the smallest normal number
    full = np.exp(np.array([0.0, -gap, -gap - 3]) - np.log1p(np.exp(-gap) + np.exp(-gap - 3)))
    if head == "softmax":
        np.testing.assert_allclose(outputs[0], np.where(full < np.sqrt(tiny), 0, full), rtol=1e-6, atol=0)
