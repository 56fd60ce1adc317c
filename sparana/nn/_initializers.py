"""Weight initialisation: Xavier, a float std, lottery-ticket resets, given weights, random sparse patterns.

The functions taking a ``model`` are what ``Model.initialize_weights``, ``Model.load_weights`` and
``Model.initialize_sparse_weights`` do; every draw comes from ``model.rng``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import scipy.sparse

from .._backend import to_host
from .._checks import check_finite, check_positive, check_ratio

DENSITY_DISTRIBUTIONS = ("uniform", "erdos_renyi")


def xavier_std(fan_in, fan_out):
    """The Xavier standard deviation used here, sqrt(3 / (fan_in + fan_out))."""
    return math.sqrt(3.0 / (fan_in + fan_out))


def weight_std(method, fan_in, fan_out, density=1.0):
    """Standard deviation of the normal draw for 'Xavier', 'Xavier_2' (Xavier / density) or a float std."""
    if isinstance(method, numbers.Real) and not isinstance(method, bool):
        return check_positive("a float initialisation std", method, allow_zero=True)
    if method == "Xavier":
        return xavier_std(fan_in, fan_out)
    if method == "Xavier_2":
        return xavier_std(fan_in, fan_out) / density
    raise ValueError(f"initialisation method must be 'Xavier', 'Xavier_2' (sparse only), 'XSparse', "
                     f"a float std or a list of (weights, biases) pairs, got {method!r}")


def normal(rng, shape, std, dtype, mean=0.0):
    """Normal draws of ``dtype`` from ``rng`` (a numpy Generator)."""
    values = rng.standard_normal(shape, dtype=dtype)
    values *= dtype(std)
    if mean:
        values += dtype(mean)
    return values


def layer_densities(density, shapes, distribution="uniform"):
    """Per-layer densities for a global ``density`` (or a list of them) over (n_in, n_out) shapes.

    'uniform' gives every layer ``density``; 'erdos_renyi' (SET, Mocanu et al.
    2018) makes density proportional to (n_in + n_out) / (n_in * n_out), scaled
    so that the total number of weights equals ``density`` times the dense
    total, with no layer above 1.
    """
    if isinstance(density, (list, tuple)):
        if len(density) != len(shapes):
            raise ValueError(f"one density per layer expected ({len(shapes)}), got {len(density)}")
        for d in density:
            check_ratio("density", d, low_open=True)
        return [float(d) for d in density]
    check_ratio("density", density, low_open=True)
    if distribution not in DENSITY_DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DENSITY_DISTRIBUTIONS}, got {distribution!r}")
    if distribution == "uniform":
        return [float(density)] * len(shapes)
    sizes = np.array([n_in * n_out for n_in, n_out in shapes], dtype=float)
    raw = np.array([(n_in + n_out) / (n_in * n_out) for n_in, n_out in shapes])
    target = density * sizes.sum()
    dense = np.zeros(len(shapes), dtype=bool)
    while True:  # layers that would exceed 1 are made dense, the rest rescaled
        budget = target - sizes[dense].sum()
        scale = budget / (raw[~dense] * sizes[~dense]).sum()
        over = (~dense) & (raw * scale > 1.0)
        if not over.any():
            break
        dense |= over
    return [1.0 if dense[i] else float(raw[i] * scale) for i in range(len(shapes))]


def random_pattern(rng, n_out, n_in, density):
    """Sorted flat positions (row * n_in + col in the (n_out, n_in) matrix) of round(density * size) entries."""
    size = n_out * n_in
    nnz = max(int(round(density * size)), 1)
    positions = rng.choice(size, size=nnz, replace=False, shuffle=False)
    positions.sort()
    return positions


# --------------------------------------------------------------------------- models
def initialize_weights(model, init_method="Xavier", bias_constant=0.0):
    """New weights for every layer (see ``Model.initialize_weights``); sparse layers keep their pattern."""
    if isinstance(init_method, (list, tuple)):
        return load_weights(model, init_method)
    check_finite("bias_constant", bias_constant)
    for layer in model.layers:
        if init_method == "XSparse":
            _reset_on_pattern(model, layer, bias_constant)
            continue
        std = weight_std(init_method, layer.input_size, layer.size)
        biases = np.full(layer.size, bias_constant, dtype=model.dtype)
        if layer.is_sparse:
            if layer.pattern is None:
                raise ValueError("sparse layers need a pattern first: use initialize_sparse_weights(density)")
            layer.values[...] = layer.backend.asarray(normal(model.rng, layer.nnz, std, model.dtype))
            layer.biases = biases
        else:
            layer.set_parameters(normal(model.rng, (layer.input_size, layer.size), std, model.dtype), biases)


def _reset_on_pattern(model, layer, bias_constant):
    """A lottery-ticket reset: new values only where the layer has weights, normal with mean density * std."""
    std = xavier_std(layer.input_size, layer.size)
    if layer.is_sparse:
        keep = np.ones(layer.nnz, dtype=bool)
        size = layer.input_size * layer.size
    else:
        keep = to_host(layer.prune_mask if layer.prune_mask is not None else layer.weights != 0)
        size = keep.size
    values = normal(model.rng, keep.shape, std, model.dtype, mean=keep.sum() / size * std) * keep
    if layer.is_sparse:
        layer.values[...] = layer.backend.asarray(values)
    else:
        layer.set_parameters(values)
    layer.biases = np.full(layer.size, bias_constant, dtype=model.dtype)


def load_weights(model, parameters):
    """Load a list of (weights, biases) pairs, one per layer, checking every shape first."""
    if len(parameters) != model.depth:
        raise ValueError(f"{model.depth} (weights, biases) pairs expected, got {len(parameters)}")
    for i, pair in enumerate(parameters):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"parameters[{i}] must be a (weights, biases) pair, got {type(pair).__name__}")
    saved = [(layer.values.copy(), layer.biases.copy()) if layer.has_parameters else None for layer in model.layers]
    try:
        for layer, (weights, biases) in zip(model.layers, parameters):
            layer.set_parameters(weights, biases)
    except Exception:
        for layer, old in zip(model.layers, saved):  # leave the model as it was
            if old is not None and tuple(layer.values.shape) == tuple(old[0].shape):
                layer.values[...] = old[0]
                layer.biases = old[1]
        raise


def initialize_sparse_weights(model, density, init_method="Xavier", bias_constant=0.0, distribution="uniform"):
    """Random patterns and values (see ``Model.initialize_sparse_weights``); returns the densities."""
    shapes = [(layer.input_size, layer.size) for layer in model.layers]
    densities = layer_densities(density, shapes, distribution)
    stds = [weight_std(init_method, n_in, n_out, d) for (n_in, n_out), d in zip(shapes, densities)]
    check_finite("bias_constant", bias_constant)
    for layer, (n_in, n_out), d, std in zip(model.layers, shapes, densities, stds):
        positions = random_pattern(model.rng, n_out, n_in, d)
        rows, cols = np.divmod(positions, n_in)
        values = normal(model.rng, positions.size, std, model.dtype)
        biases = np.full(n_out, bias_constant, dtype=model.dtype)
        if layer.is_sparse:
            layer.set_parameters(scipy.sparse.csr_matrix((values, (rows, cols)), shape=(n_out, n_in)), biases)
        else:
            weights = np.zeros((n_in, n_out), dtype=model.dtype)
            weights[cols, rows] = values
            mask = np.zeros((n_in, n_out), dtype=bool)
            mask[cols, rows] = True
            layer.prune_mask = None  # the new pattern replaces any earlier mask
            layer.set_parameters(weights, biases)
            layer.prune_mask = mask
    return densities
