"""Shared fixtures: small random models and data on the CPU."""

import numpy as np
import pytest

import sparana as sa


def build_model(sizes, activations, sparse=False, density=0.5, seed=0, dtype="float64", comp_type="CPU",
                bias=0.1, **kw):
    """A small model with given layer sizes [n_in, n_1, ...] and activations, initialised."""
    dense = {"relu": sa.DenseReluLayer, "linear": sa.DenseLinearLayer, "softmax": sa.DenseSoftmaxLayer}
    sp = {"relu": sa.SparseReluLayer, "linear": sa.SparseLinearLayer, "softmax": sa.SparseSoftmaxLayer}
    kinds = sparse if isinstance(sparse, (list, tuple)) else [sparse] * len(activations)
    layers = [(sp if s else dense)[a](size=n) for n, a, s in zip(sizes[1:], activations, kinds)]
    model = sa.Model(sizes[0], layers, comp_type=comp_type, seed=seed, dtype=dtype, **kw)
    if any(kinds):
        model.initialize_sparse_weights(density, "Xavier", bias_constant=bias)
        # dense layers got a prune mask from the sparse initialisation; drop it
        for layer in model.layers:
            if not layer.is_sparse:
                layer.prune_mask = None
    else:
        model.initialize_weights("Xavier", bias_constant=bias)
    return model


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def pytest_collection_modifyitems(config, items):
    """Skip the GPU tests (tests/gpu) where CuPy or a CUDA device is missing."""
    if sa.gpu_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA device")
    for item in items:
        if "gpu" in item.path.parts:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ray_environment():
    """Ray's token in a temporary folder, token authentication on and Ray on loopback, for the session."""
    from ray_support import RayEnvironment

    environment = RayEnvironment().enter()
    yield environment
    environment.exit()
