"""Weight initialisation: Xavier (the original's variant), float std, random sparse patterns."""

from __future__ import annotations

import math
import numbers

import numpy as np

from ._layer import check_ratio

DENSITY_DISTRIBUTIONS = ("uniform", "erdos_renyi")


def xavier_std(fan_in, fan_out):
    """The original's Xavier standard deviation, sqrt(3 / (fan_in + fan_out)).

    (The usual Glorot normal uses 2 instead of 3; the original's value is kept.)
    """
    return math.sqrt(3.0 / (fan_in + fan_out))


def is_std(method):
    return isinstance(method, numbers.Real) and not isinstance(method, bool)


def weight_std(method, fan_in, fan_out, density=1.0):
    """Standard deviation of the normal draw for 'Xavier', 'Xavier_2' or a float std."""
    if is_std(method):
        if not (math.isfinite(method) and method >= 0):
            raise ValueError(f"a float initialisation std must be finite and >= 0, got {method!r}")
        return float(method)
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
    nnz = int(round(density * size))
    nnz = max(nnz, 1)
    positions = rng.choice(size, size=nnz, replace=False, shuffle=False)
    positions.sort()
    return positions
