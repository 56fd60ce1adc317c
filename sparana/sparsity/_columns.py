"""Choosing units (columns of a weight matrix) for submodels: the vulcanizer's selection types.

Each chooser takes one 2-D host array in the dense (n_in, n_out) orientation,
where NaN marks entries that are not there (pruned weights, entries missing
from a sparse pattern), and returns the chosen column indices as an int64
array, in the order they were found (the best first):

* ``get_max_columns`` ('max'): walk the entries in descending signed value and
  collect the distinct columns in the order they appear: the units that own
  the largest single weights come first.
* ``get_normal_columns`` ('normal'): a random choice biased towards the top:
  draw an entry rank r = floor(|N(0, std * size / 2)|) (a half-normal;
  ``std`` is a fraction of the number of entries), take the entry of rank r
  from the top (rank 0 = the largest), and collect distinct columns. Draws
  that land on columns already found are ignored. The draws are bounded: if
  they do not produce enough distinct columns (a tiny std keeps hitting the
  same top entries), the missing columns are taken in the 'max' order.
* ``get_random_columns`` ('random'): a uniform random choice.

Ties are broken by position (the entry that comes first in C order wins).
Columns with no entry at all come last, by index.
"""

from __future__ import annotations

import math

import numpy as np

from .._checks import check_std, is_integer
from ._selection import ranked

SELECTION_TYPES = ("max", "normal", "random")

# Rounds of half-normal draws before the remaining columns are filled in the 'max' order.
NORMAL_ROUNDS = 16


def _as_matrix(array):
    matrix = np.asarray(array, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"a 2-D (n_in, n_out) array expected, got shape {matrix.shape}")
    return matrix


def _check_count(matrix, columns):
    n_out = matrix.shape[1]
    if not is_integer(columns, 0, n_out):
        raise ValueError(f"the number of columns must be an integer in [0, {n_out}] (the matrix has "
                         f"{n_out} columns), got {columns!r}")
    return int(columns)


def max_column_order(array):
    """Every column, in the order a walk over the entries in descending value first meets it."""
    matrix = _as_matrix(array)
    n_out = matrix.shape[1]
    filled = np.where(np.isnan(matrix), -np.inf, matrix)
    if filled.shape[0] == 0:
        return np.arange(n_out)
    column_max = filled.max(axis=0)
    # A column is met at its largest entry; among equal entries the walk meets the first position first.
    first_row = np.argmax(filled == column_max, axis=0)
    first_position = first_row * n_out + np.arange(n_out)
    return np.lexsort((first_position, -column_max)).astype(np.int64)


def get_max_columns(array, columns):
    """The ``columns`` columns owning the largest weights (see the module docstring)."""
    matrix = _as_matrix(array)
    return max_column_order(matrix)[:_check_count(matrix, columns)]


def half_normal_draws(rng, scale, limit, count):
    """``count`` draws of floor(|N(0, scale)|) conditioned on being below ``limit`` (inverse CDF)."""
    if scale == 0:
        return np.zeros(count, dtype=np.int64)
    from scipy import special  # a slow import, needed only here
    reach = special.erf(limit / (scale * math.sqrt(2)))  # P(|X| < limit)
    magnitude = scale * math.sqrt(2) * special.erfinv(rng.random(count) * reach)
    return np.minimum(np.floor(magnitude), limit - 1).astype(np.int64)


def get_normal_columns(array, columns, std, rng=None):
    """``columns`` distinct columns drawn with a half-normal bias towards the largest entries.

    ``std`` (>= 0) is the spread as a fraction of the number of entries: 0
    gives the 'max' choice, a large std tends to a uniform one. ``rng``: a
    seed or a ``numpy.random.Generator``.
    """
    matrix = _as_matrix(array)
    columns = _check_count(matrix, columns)
    scale = check_std(std) * matrix.size / 2
    rng = np.random.default_rng(rng)
    order = ranked(matrix, descending=True)  # entries from the largest down; NaN left out
    n_out = matrix.shape[1]
    seen = np.zeros(n_out, dtype=bool)
    found = []
    for _ in range(NORMAL_ROUNDS if order.size else 0):
        needed = columns - len(found)
        if needed == 0:
            break
        drawn = order[half_normal_draws(rng, scale, order.size, max(64, 4 * needed))] % n_out
        unique, first = np.unique(drawn, return_index=True)
        new = unique[np.argsort(first)]  # in the order drawn
        new = new[~seen[new]][:needed]
        seen[new] = True
        found.extend(new.tolist())
    if len(found) < columns:  # too few distinct draws: complete in the 'max' order
        rest = max_column_order(matrix)
        found.extend(rest[~seen[rest]][:columns - len(found)].tolist())
    return np.asarray(found, dtype=np.int64)


def get_random_columns(array, columns, rng=None):
    """``columns`` columns chosen uniformly at random."""
    matrix = _as_matrix(array)
    columns = _check_count(matrix, columns)
    return np.random.default_rng(rng).permutation(matrix.shape[1])[:columns].astype(np.int64)


def choose_columns(array, columns, selection_type="max", std=None, rng=None):
    """Dispatch on ``selection_type`` ('max', 'normal' or 'random')."""
    if selection_type == "max":
        return get_max_columns(array, columns)
    if selection_type == "normal":
        return get_normal_columns(array, columns, std, rng)
    if selection_type == "random":
        return get_random_columns(array, columns, rng)
    raise ValueError(f"selection_type must be one of {SELECTION_TYPES}, got {selection_type!r}")
