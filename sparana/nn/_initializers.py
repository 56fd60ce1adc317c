"""Weight initialisation: Xavier, He, a float std, lottery-ticket resets, given weights (random sparse
patterns and live fan-in scaling: :mod:`._sparse_init`; the rules: :mod:`._init_rules`).

The functions taking a ``model`` are what ``Model.initialize_weights``, ``Model.load_weights`` and
``Model.initialize_sparse_weights`` do; every draw comes from ``model.rng``.
"""

from __future__ import annotations

import numpy as np

from .._backend import to_host
from .._checks import check_finite
from ._init_rules import normal, weight_std, xavier_std
from ._sparse_init import check_scale, pattern_values



# --------------------------------------------------------------------------- models
def initialize_weights(model, init_method="Xavier", bias_constant=0.0, scale="live"):
    """New weights for every layer (see ``Model.initialize_weights``); sparse layers keep their pattern,
    their values scaled by the live connections unless ``scale='dense'`` (see :mod:`._sparse_init`)."""
    if isinstance(init_method, (list, tuple)):
        return load_weights(model, init_method)
    check_finite("bias_constant", bias_constant)
    check_scale(scale)
    for layer in model.layers:
        if init_method == "XSparse":
            _reset_on_pattern(model, layer, bias_constant)
            continue
        std = weight_std(init_method, layer.input_size, layer.size)
        biases = np.full(layer.size, bias_constant, dtype=model.dtype)
        if layer.is_sparse:
            if layer.pattern is None:
                raise ValueError("sparse layers need a pattern first: use initialize_sparse_weights(density)")
            p = layer.pattern
            values = pattern_values(model.rng, init_method, p.shape, to_host(p.rows), to_host(p.indices),
                                    layer.nnz / (p.shape[0] * p.shape[1]), model.dtype, scale)
            layer.values[...] = layer.backend.asarray(values)
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
