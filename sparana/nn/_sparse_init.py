"""Sparse initialisation: per-layer densities (uniform, Erdős–Rényi, ERK), random patterns, and weights
scaled by the connections that exist.

A network trained sparse from scratch learns only when each unit's weights are scaled for the
inputs it really has. With ``scale='live'`` (the default) the initialisation rule is the dense one
applied to the live connections: a stored weight from input j to unit k gets the rule's std with
``fan_in`` = the number of weights stored in row k (the unit's live fan-in) and ``fan_out`` = the
number stored in column j (the input's live fan-out). ``scale='dense'`` uses the layer's full
n_in and n_out, as the original did: at 1% density that makes every weight about 10x too small.
'Xavier_2' (the Xavier std divided by the density) and a float std are fixed rules that ``scale``
does not change.

Densities per layer (``layer_densities``):

* 'uniform': every layer gets ``density``;
* 'erdos_renyi' with ``epsilon`` (SET, Mocanu et al. 2018): density = epsilon * (n_in + n_out) /
  (n_in * n_out), capped at 1, so a layer stores about epsilon * (n_in + n_out) weights;
* 'erdos_renyi' without ``epsilon``, or 'erk' (RigL, Evci et al. 2020): densities proportional to
  (n_in + n_out) / (n_in * n_out), scaled so that the whole network has ``density``, layers that
  would exceed 1 made dense. ERK's kernel term only matters for convolutions; for the fully
  connected layers of this package ERK is this rule.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from .._checks import check_finite, check_positive, check_ratio
from ._init_rules import normal, weight_std

DENSITY_DISTRIBUTIONS = ("uniform", "erdos_renyi", "erk")
SCALES = ("live", "dense")
# Rules whose fans ``scale='live'`` replaces by the live connections.
LIVE_RULES = ("Xavier", "He")


def check_scale(scale):
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES} ('live': the rule applied to each unit's stored "
                         f"connections; 'dense': to the layer's full shape), got {scale!r}")
    return scale


def layer_densities(density, shapes, distribution="uniform", epsilon=None):
    """Per-layer densities over (n_in, n_out) ``shapes``; see the module docstring.

    ``density``: a global density in (0, 1], or a list with one per layer (then ``distribution``
    is not used), or None with ``epsilon`` (Erdős–Rényi only).
    """
    if distribution not in DENSITY_DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DENSITY_DISTRIBUTIONS}, got {distribution!r}")
    if epsilon is not None:
        if distribution != "erdos_renyi" or density is not None:
            raise ValueError(f"epsilon sets the densities itself: give density=None and distribution='erdos_renyi' "
                             f"with it, got density={density!r} and distribution={distribution!r}")
        epsilon = check_positive("epsilon", epsilon)
        return [min(1.0, epsilon * (n_in + n_out) / (n_in * n_out)) for n_in, n_out in shapes]
    if isinstance(density, (list, tuple)):
        if len(density) != len(shapes):
            raise ValueError(f"one density per layer expected ({len(shapes)}), got {len(density)}")
        for d in density:
            check_ratio("density", d, low_open=True)
        return [float(d) for d in density]
    check_ratio("density", density, low_open=True)
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


def entry_stds(method, shape, rows, cols, row_counts, col_counts, density, scale="live"):
    """The std of each entry at (rows, cols) of an (n_out, n_in) pattern: a float, or one per entry.

    ``row_counts``/``col_counts``: the pattern's stored weights per row (unit) and per column
    (input), used when ``scale='live'`` and the rule is one of LIVE_RULES.
    """
    n_out, n_in = shape
    if check_scale(scale) == "live" and method in LIVE_RULES:
        return weight_std(method, row_counts[rows].astype(np.float64), col_counts[cols].astype(np.float64))
    return weight_std(method, n_in, n_out, density)


def pattern_values(rng, method, shape, rows, cols, density, dtype, scale="live"):
    """Normal draws of ``dtype`` at (rows, cols) (a whole pattern), scaled by :func:`entry_stds`."""
    n_out, n_in = shape
    row_counts = np.bincount(rows, minlength=n_out)
    col_counts = np.bincount(cols, minlength=n_in)
    return normal(rng, rows.size, entry_stds(method, shape, rows, cols, row_counts, col_counts, density, scale),
                  dtype)


def initialize_sparse_weights(model, density, init_method="Xavier", bias_constant=0.0, distribution="uniform",
                              scale="live", epsilon=None):
    """Random patterns and values (see ``Model.initialize_sparse_weights``); returns the densities."""
    shapes = [(layer.input_size, layer.size) for layer in model.layers]
    densities = layer_densities(density, shapes, distribution, epsilon)
    check_scale(scale)
    check_finite("bias_constant", bias_constant)
    for (n_in, n_out), d in zip(shapes, densities):
        weight_std(init_method, n_in, n_out, d)  # refuse an unknown rule before any layer changes
    for layer, (n_in, n_out), d in zip(model.layers, shapes, densities):
        positions = random_pattern(model.rng, n_out, n_in, d)
        rows, cols = np.divmod(positions, n_in)
        values = pattern_values(model.rng, init_method, (n_out, n_in), rows, cols, d, model.dtype, scale)
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
