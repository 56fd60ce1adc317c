"""Initialisation rules: the std of a weight's normal draw from its fans ('Xavier', 'He', 'Xavier_2',
a float std), and the draws themselves."""

from __future__ import annotations

import numbers

import numpy as np

from .._checks import check_positive


def xavier_std(fan_in, fan_out):
    """The Xavier standard deviation used here, sqrt(3 / (fan_in + fan_out)) (arrays element-wise)."""
    return np.sqrt(3.0 / (fan_in + fan_out)) if isinstance(fan_in, np.ndarray) else (3.0 / (fan_in + fan_out)) ** 0.5


def weight_std(method, fan_in, fan_out, density=1.0):
    """Standard deviation of the normal draw: 'Xavier', 'He' (sqrt(2 / fan_in)), 'Xavier_2' (Xavier /
    density) or a float std. The fans may be arrays (one per weight): the result is then one too."""
    if isinstance(method, numbers.Real) and not isinstance(method, bool):
        return check_positive("a float initialisation std", method, allow_zero=True)
    if method == "Xavier":
        return xavier_std(fan_in, fan_out)
    if method == "He":
        return np.sqrt(2.0 / fan_in) if isinstance(fan_in, np.ndarray) else (2.0 / fan_in) ** 0.5
    if method == "Xavier_2":
        return xavier_std(fan_in, fan_out) / density
    raise ValueError(f"initialisation method must be 'Xavier', 'He', 'Xavier_2' (sparse only), 'XSparse', "
                     f"a float std or a list of (weights, biases) pairs, got {method!r}")


def normal(rng, shape, std, dtype, mean=0.0):
    """Normal draws of ``dtype`` from ``rng`` (a numpy Generator); ``std`` may be one per draw."""
    values = rng.standard_normal(shape, dtype=dtype)
    values *= np.asarray(std, dtype=dtype)
    if mean:
        values += dtype(mean)
    return values
