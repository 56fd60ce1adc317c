"""Selection helpers: which entries of a statistics array to pick (host NumPy).

Every helper takes one array of any shape (a dense layer's (n_in, n_out)
statistics, or a sparse layer's vector of stored entries) and returns a
boolean mask of the same shape, True at the chosen entries (what a layer's
``training_mask`` needs; ``np.argwhere(mask)`` gives coordinates). Given a list
or tuple of arrays, it returns a list with one mask per array. This module is
``sparana.parameter_selection``.

Conventions shared by all of them:

* NaN entries are not candidates: never chosen, and not counted.
* A ``ratio`` chooses k = floor(ratio * number of candidates) entries; the
  product is rounded to 9 decimals before the floor, so 0.29 * 100 gives 29.
  k = 0 chooses nothing.
* Ties are broken by position: among equal values the entry that comes first
  in C order wins, for the largest as for the smallest.
* Random helpers take ``rng``: a seed or a ``numpy.random.Generator``.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .._checks import check_ratio, check_std, is_integer

__all__ = [
    "candidate_count", "check_std", "get_k_biggest", "get_k_max", "get_k_min", "get_k_smallest", "get_maxs",
    "get_negatives", "get_normal_high", "get_normal_low", "get_normal_split", "get_positives", "get_ratio_biggest",
    "get_uniform", "get_zeros", "half_normal_ranks", "ranked", "selection_count",
]


def _each(function):
    """Apply ``function`` to each array of a list (one random stream shared across the list)."""

    @functools.wraps(function)
    def wrapper(values, *args, **kwargs):
        if "rng" in kwargs:
            kwargs["rng"] = np.random.default_rng(kwargs["rng"])
        if isinstance(values, (list, tuple)):
            return [function(_as_values(v), *args, **kwargs) for v in values]
        return function(_as_values(values), *args, **kwargs)

    return wrapper


def _as_values(values):
    array = np.asarray(values)
    if array.dtype.kind not in "fiub":
        raise TypeError(f"a numeric array of statistics expected, got dtype {array.dtype}")
    return array.astype(np.float64, copy=False)


def candidate_count(values):
    """Number of entries that are not NaN."""
    return int(np.count_nonzero(~np.isnan(values)))


def selection_count(values, ratio, name="ratio"):
    """k = floor(ratio * candidates), with ``ratio`` checked to lie in [0, 1]."""
    return _fraction_of(candidate_count(values), ratio, name)


def _fraction_of(n, ratio, name):
    check_ratio(name, ratio)
    return math.floor(round(ratio * n, 9))


def ranked(values, descending=False, magnitude=False):
    """Flat indices of the candidates, sorted by value (|value| if ``magnitude``); ties by position."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    index = np.flatnonzero(~np.isnan(flat))
    keys = np.abs(flat[index]) if magnitude else flat[index]
    order = np.argsort(-keys if descending else keys, kind="stable")
    return index[order]


def _mask(values, flat_index):
    mask = np.zeros(values.size, dtype=bool)
    mask[flat_index] = True
    return mask.reshape(values.shape)


def _k_ranked(values, ratio, descending, magnitude):
    k = selection_count(values, ratio)
    return _mask(values, ranked(values, descending, magnitude)[:k])


@_each
def get_k_min(values, ratio):
    """The k smallest signed values."""
    return _k_ranked(values, ratio, descending=False, magnitude=False)


@_each
def get_k_max(values, ratio):
    """The k largest signed values."""
    return _k_ranked(values, ratio, descending=True, magnitude=False)


@_each
def get_k_smallest(values, ratio):
    """The k smallest absolute values."""
    return _k_ranked(values, ratio, descending=False, magnitude=True)


@_each
def get_k_biggest(values, ratio):
    """The k largest absolute values."""
    return _k_ranked(values, ratio, descending=True, magnitude=True)


def half_normal_ranks(n, k, std, rng=None):
    """k distinct ranks in [0, n), biased towards 0 by a half-normal of scale ``n * std / 2``.

    The distribution of drawing rank = floor(|N(0, n * std / 2)|) again and
    again, rejecting duplicates and ranks >= n, until k distinct ones are found,
    drawn in one pass: successive sampling without replacement, each rank
    weighted by the probability of its bin, done as a Gumbel top-k (equivalent,
    and it always terminates, however small std is). std = 0 gives the ranks
    0..k-1; a large std tends to a uniform choice. Returns the ranks sorted.
    """
    std = check_std(std)
    if not (is_integer(n, 0) and is_integer(k, 0, n)):
        raise ValueError(f"0 <= k <= n integers expected, got n={n!r}, k={k!r}")
    scale = n * std / 2
    if k == 0 or scale == 0 or k == n:
        return np.arange(k)
    from scipy import special  # a slow import, needed only here

    ranks = np.arange(n)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        tail = special.log_ndtr(-ranks / scale)  # log P(X >= r/scale) for X ~ N(0, 1)
        log_weight = tail + np.log(-np.expm1(special.log_ndtr(-(ranks + 1) / scale) - tail))
        # Where the bins are below float resolution, the density at the bin's centre.
        rough = ~np.isfinite(log_weight)
        log_weight[rough] = -0.5 * ((ranks[rough] + 0.5) / scale) ** 2
    finite = np.flatnonzero(np.isfinite(log_weight))
    if finite.size <= k:  # the rest are far too unlikely to come before them: take them by rank
        rest = np.flatnonzero(~np.isfinite(log_weight))[:k - finite.size]
        return np.sort(np.concatenate([finite, rest]))
    keys = log_weight[finite] + np.random.default_rng(rng).gumbel(size=finite.size)
    return np.sort(finite[np.argpartition(-keys, k - 1)[:k]])


def _normal(values, ratio, std, rng, descending):
    k = selection_count(values, ratio)
    order = ranked(values, descending=descending, magnitude=True)
    return _mask(values, order[half_normal_ranks(order.size, k, std, rng)])


@_each
def get_normal_high(values, ratio, std, *, rng=None):
    """k random entries biased towards the largest |values|: half-normal ranks from the top.

    ``std`` is a fraction of the number of candidates; 0 gives exactly the k largest.
    """
    return _normal(values, ratio, std, rng, descending=True)


@_each
def get_normal_low(values, ratio, std, *, rng=None):
    """k random entries biased towards the smallest |values| (see :func:`get_normal_high`)."""
    return _normal(values, ratio, std, rng, descending=False)


@_each
def get_normal_split(values, ratio, std, *, rng=None):
    """Half of k from :func:`get_normal_low`, the rest from :func:`get_normal_high`, disjoint.

    The high half is drawn among the entries the low half left, with the same spread.
    """
    k = selection_count(values, ratio)
    order = ranked(values, magnitude=True)
    low = order[half_normal_ranks(order.size, k // 2, std, rng)]
    remaining = values.copy()
    remaining.reshape(-1)[low] = np.nan
    rest = ranked(remaining, descending=True, magnitude=True)
    spread = std * order.size / rest.size if rest.size else 0.0
    high = rest[half_normal_ranks(rest.size, k - k // 2, spread, rng)]
    return _mask(values, np.concatenate([low, high]))


@_each
def get_uniform(values, ratio, *, rng=None):
    """k candidates chosen uniformly at random."""
    k = selection_count(values, ratio)
    index = np.flatnonzero(~np.isnan(values.reshape(-1)))
    return _mask(values, np.random.default_rng(rng).choice(index, size=k, replace=False))


@_each
def get_ratio_biggest(values, ratio, random_ratio, *, rng=None):
    """A random fraction ``random_ratio`` of the top-``ratio`` entries by |value|.

    Top 10% with random_ratio 0.5 gives 5% of the candidates: floor(random_ratio * k)
    of the k biggest, uniformly.
    """
    top = ranked(values, descending=True, magnitude=True)[:selection_count(values, ratio)]
    count = _fraction_of(top.size, random_ratio, "random_ratio")
    return _mask(values, np.random.default_rng(rng).choice(top, size=count, replace=False))


@_each
def get_maxs(values):
    """Each row's largest entry (a 2-D array; NaN ignored, ties to the first; all-NaN rows: none)."""
    if values.ndim != 2:
        raise ValueError(f"get_maxs needs a 2-D array, got shape {values.shape}")
    mask = np.zeros(values.shape, dtype=bool)
    rows = np.flatnonzero(~np.isnan(values).all(axis=1))
    mask[rows, np.nanargmax(values[rows], axis=1) if rows.size else rows] = True
    return mask


@_each
def get_zeros(values):
    """Entries equal to 0."""
    return values == 0


@_each
def get_negatives(values):
    """Entries below 0."""
    return values < 0


@_each
def get_positives(values):
    """Entries above 0."""
    return values > 0
