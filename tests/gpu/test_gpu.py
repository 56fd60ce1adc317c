"""The GPU path against the CPU path: same kernels, same gradients, same training, same files."""

import numpy as np
import pytest
import scipy.sparse

import sparana as sa
from sparana.kernels import SparsePattern, cpu, gpu

pytestmark = pytest.mark.gpu


def cp():
    import cupy

    return cupy


def model_pair(sparse, head="linear", seed=0, dtype="float64"):
    """The same small model on the CPU and on the GPU."""
    layers = lambda: [(sa.SparseReluLayer if sparse else sa.DenseReluLayer)(24),  # noqa: E731
                      (sa.SparseReluLayer if sparse else sa.DenseReluLayer)(16),
                      {"linear": sa.DenseLinearLayer, "softmax": sa.DenseSoftmaxLayer}[head](5)]
    cpu_model = sa.Model(30, layers(), comp_type="CPU", seed=seed, dtype=dtype)
    if sparse:
        cpu_model.initialize_sparse_weights([0.3, 0.3, 1.0], bias_constant=0.1)
        cpu_model.layers[2].prune_mask = None
    else:
        cpu_model.initialize_weights("Xavier", bias_constant=0.1)
    gpu_model = sa.Model(30, layers(), comp_type="CPU", seed=seed, dtype=dtype)
    gpu_model.load_weights([(layer.weights, layer.biases) for layer in cpu_model.layers])
    gpu_model.convert_comp_type("GPU")
    return cpu_model, gpu_model


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_kernels_match_the_cpu(dtype):
    rng = np.random.default_rng(0)
    matrix = scipy.sparse.random(300, 200, density=0.05, format="csr", random_state=1, dtype=dtype)
    matrix.sort_indices()
    host = SparsePattern(matrix.indptr, matrix.indices, matrix.shape)
    device = SparsePattern(matrix.indptr, matrix.indices, matrix.shape, xp=cp())
    x = rng.standard_normal((200, 64)).astype(dtype)
    grad = rng.standard_normal((300, 64)).astype(dtype)
    bias = rng.standard_normal(300).astype(dtype)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    out_c, out_g = np.empty((300, 64), dtype), cp().empty((300, 64), dtype)
    cpu.spmm(host, matrix.data, x, bias, True, out_c)
    gpu.spmm(device, cp().asarray(matrix.data), cp().asarray(x), cp().asarray(bias), True, out_g)
    np.testing.assert_allclose(out_g.get(), out_c, rtol=tol, atol=tol)
    t_c, t_g = np.empty((200, 64), dtype), cp().empty((200, 64), dtype)
    cpu.spmm_t(host, matrix.data, grad, t_c)
    gpu.spmm_t(device, cp().asarray(matrix.data), cp().asarray(grad), t_g)
    np.testing.assert_allclose(t_g.get(), t_c, rtol=tol, atol=tol)
    s_c, s_g = np.empty(matrix.nnz, dtype), cp().empty(matrix.nnz, dtype)
    cpu.sddmm(host, grad, x, s_c)
    gpu.sddmm(device, cp().asarray(grad), cp().asarray(x), s_g)
    np.testing.assert_allclose(s_g.get(), s_c, rtol=tol, atol=tol)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("head", ["linear", "softmax"])
def test_outputs_and_gradients_match_the_cpu(sparse, head):
    cpu_model, gpu_model = model_pair(sparse, head)
    rng = np.random.default_rng(1)
    x, y = rng.random((12, 30)), rng.integers(0, 5, 12)
    np.testing.assert_allclose(sa.to_host(gpu_model.outputs(x)), cpu_model.outputs(x), rtol=1e-10, atol=1e-12)
    for loss in ("cross_entropy", "quadratic"):
        for (gw_c, gb_c), (gw_g, gb_g) in zip(cpu_model.gradients(x, y, loss, 0.01, 0.02),
                                              gpu_model.gradients(x, y, loss, 0.01, 0.02)):
            np.testing.assert_allclose(sa.to_host(gw_g), gw_c, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(sa.to_host(gb_g), gb_c, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("name", ["adam", "sgd", "selected"])
def test_training_matches_the_cpu(sparse, name):
    cpu_model, gpu_model = model_pair(sparse)
    rng = np.random.default_rng(2)
    x, y = rng.random((32, 30)), rng.integers(0, 5, 32)
    optimizers = []
    for model in (cpu_model, gpu_model):
        if name == "selected":
            for layer in model.layers:
                layer.training_mask = sa.to_host(layer.values) > 0
            optimizers.append(sa.SelectedAdamOptimizer(model, 1e-2, l2_constant=0.01))
        elif name == "sgd":
            optimizers.append(sa.SGDOptimizer(model, 0.1, momentum=0.9, l1_constant=0.001))
        else:
            optimizers.append(sa.AdamOptimizer(model, 1e-2, clip=1.0, regularization="original", l2_constant=0.1))
    for _ in range(5):
        for opt in optimizers:
            opt.train_step(x, y)
    for a, b in zip(cpu_model.layers, gpu_model.layers):
        np.testing.assert_allclose(sa.to_host(b.values), a.values, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(sa.to_host(b.biases), a.biases, rtol=1e-8, atol=1e-10)


def test_comp_type_round_trip_moves_every_array():
    cpu_model, gpu_model = model_pair(True)
    assert gpu_model.comp_type == "GPU"
    assert all(type(layer.values).__module__.startswith("cupy") for layer in gpu_model.layers)
    gpu_model.convert_comp_type()
    assert gpu_model.comp_type == "CPU" and all(isinstance(layer.values, np.ndarray) for layer in gpu_model.layers)
    x = np.random.default_rng(3).random((4, 30))
    np.testing.assert_allclose(gpu_model.outputs(x), cpu_model.outputs(x), rtol=1e-12)


def test_conversions_pruning_and_checkpoints_on_the_gpu(tmp_path):
    _, model = model_pair(False, dtype="float32")
    x = np.random.default_rng(4).random((20, 30)).astype(np.float32)
    lobo = sa.Lobotomizer(model)
    lobo.get_MAAV(x)
    lobo.prune_smallest(0.8)
    before = sa.to_host(model.outputs(x))
    model.convert_to_sparse()
    np.testing.assert_allclose(sa.to_host(model.outputs(x)), before, rtol=1e-5, atol=1e-6)
    opt = sa.AdamOptimizer(model, 1e-3)
    opt.train_step(x, np.zeros(20, dtype=int))
    path = sa.save_checkpoint(tmp_path / "gpu.safetensors", model, opt)
    loaded = sa.load_checkpoint(path, comp_type="GPU")
    np.testing.assert_array_equal(sa.to_host(loaded.outputs(x)), sa.to_host(model.outputs(x)))
    model.convert_to_dense()
    np.testing.assert_allclose(sa.to_host(model.outputs(x)), sa.to_host(loaded.outputs(x)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sparse", [False, True])
def test_optimizer_state_follows_convert_comp_type(sparse):
    """Train on the CPU, move to the GPU and back with a live optimizer: the state moves and is kept."""
    reference, moved = model_pair(sparse)
    moved.convert_comp_type("CPU")  # both start on the CPU with the same weights
    rng = np.random.default_rng(5)
    x, y = rng.random((32, 30)), rng.integers(0, 5, 32)
    optimizers = [sa.AdamOptimizer(model, 1e-2) for model in (reference, moved)]
    for step in range(6):
        if step == 2:
            moved.convert_comp_type("GPU")
        if step == 4:
            for i, kind in list(optimizers[1]._slots):
                slot = optimizers[1]._slot(i, moved.layers[i], kind)
                assert all(type(a).__module__.startswith("cupy") for a in slot.state.values())
            moved.convert_comp_type("CPU")
        for opt in optimizers:
            opt.train_step(x, y)
    for a, b in zip(reference.layers, moved.layers):
        np.testing.assert_allclose(sa.to_host(b.values), a.values, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(sa.to_host(b.biases), a.biases, rtol=1e-8, atol=1e-10)
    state_a, state_b = (opt.state_arrays() for opt in optimizers)
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        np.testing.assert_allclose(state_b[key], state_a[key], rtol=1e-8, atol=1e-12)


def test_the_cuda_kernels_match_the_reference_on_the_gpu():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from cuda_kernel_cases import check

    assert check(xp=cp()) == 50


@pytest.mark.parametrize("sparse", [False, True])
def test_a_training_step_does_not_wait_for_the_device(sparse):
    import cupyx

    if not hasattr(cupyx, "allow_synchronize"):
        pytest.skip("this CuPy cannot forbid synchronisation")
    _, model = model_pair(sparse, dtype="float32")
    model.reseed(0)
    optimizer = sa.AdamOptimizer(model, 1e-3)
    rng = np.random.default_rng(0)
    x = cp().asarray(rng.random((16, 30), dtype=np.float32))
    y = cp().asarray(rng.integers(0, 5, 16))
    optimizer.train_step(x, y)  # the first step builds the optimizer's state
    with cupyx.allow_synchronize(False):
        for _ in range(3):
            loss = optimizer.train_step(x, y)
    assert np.isfinite(float(loss))


def test_dropout_draws_from_one_device_generator_per_stream():
    _, model = model_pair(False, dtype="float32")
    backend = model.backend
    first = backend.device_rng(model.rng)
    assert backend.device_rng(model.rng) is first
    model.reseed(3)
    assert backend.device_rng(model.rng) is not first
