"""How much to prune, kept apart from how weights are ranked (:mod:`._statistics`).

A pruning step is: statistics (one array per layer, NaN = not a candidate) ->
a number of weights to remove per layer (from a ratio, a per-layer target
sparsity, or a schedule) -> the keep mask that removes the smallest ->
``layer.keep_only(mask)``, which zeroes dense weights and keeps them at zero
(their prune mask) or removes sparse entries from the pattern.
"""

from __future__ import annotations

import math

import numpy as np

from .._checks import check_integer, check_ratio
from ..nn._training import SCHEDULES, schedule_factor
from ._selection import ranked, selection_count


def present_count(layer):
    """Weights still present in the layer (not pruned)."""
    if layer.is_sparse:
        return layer.nnz
    mask = layer.prune_mask
    return layer.nnz if mask is None else int(mask.sum())


def dense_size(layer):
    return layer.input_size * layer.size


def sparsity(layer):
    """Fraction of the layer's dense (n_in x n_out) weights that are pruned."""
    return 1.0 - present_count(layer) / dense_size(layer)


def ratio_counts(statistics, ratio, included):
    """Per layer: floor(ratio * candidates) where ``included[i]``, else 0 (incremental pruning)."""
    check_ratio("prune_ratio", ratio)
    return [selection_count(s, ratio, "prune_ratio") if use else 0 for s, use in zip(statistics, included)]


def target_counts(layers, targets, present=None):
    """Per layer: weights to remove to reach the cumulative target sparsity (None: skip).

    The current sparsity counts as present the weights still stored, or
    ``present[i]`` when given. A target at or below the layer's current
    sparsity removes nothing.
    """
    if len(targets) != len(layers):
        raise ValueError(f"one target sparsity (or None) per layer expected ({len(layers)}), got {len(targets)}")
    present = [present_count(layer) for layer in layers] if present is None else present
    counts = []
    for i, (layer, target) in enumerate(zip(layers, targets)):
        if target is None:
            counts.append(0)
            continue
        check_ratio(f"layers[{i}] (target sparsity)", target)
        zeros_wanted = math.floor(dense_size(layer) * target + 1e-9)
        counts.append(max(0, zeros_wanted - (dense_size(layer) - present[i])))
    return counts


def smallest_mask(statistics, count):
    """Keep mask that drops the ``count`` candidates with the smallest statistics (ties: first position)."""
    keep = np.ones(statistics.size, dtype=bool)
    keep[ranked(statistics)[:max(int(count), 0)]] = False
    return keep.reshape(statistics.shape)


def polynomial_schedule(final, steps, initial=0.0, power=3):
    """Target sparsities for ``steps`` pruning rounds rising from ``initial`` to ``final``.

    s_t = final + (initial - final) * (1 - t/steps)^power, t = 1..steps (Zhu and
    Gupta 2017): large steps first, small ones near the end.
    """
    check_ratio("final sparsity", final)
    check_ratio("initial sparsity", initial)
    check_integer("steps", steps, low=1)
    return [final + (initial - final) * (1 - t / steps) ** power for t in range(1, steps + 1)]


REWIRE_SCHEDULES = SCHEDULES[1:]  # a rewiring always has a schedule (no None)


def rewire_fraction(fraction, step, end=None, schedule="cosine"):
    """The fraction of each layer's stored weights that a rewiring at ``step`` replaces.

    'constant': ``fraction`` always; 'cosine' (RigL): fraction / 2 * (1 + cos(pi * step / end));
    'linear': fraction * (1 - step / end). From ``end`` on (when given) nothing is rewired.
    """
    if schedule not in REWIRE_SCHEDULES:
        raise ValueError(f"schedule must be one of {REWIRE_SCHEDULES}, got {schedule!r}")
    if end is not None and step >= end:
        return 0.0
    if schedule == "constant":
        return float(fraction)
    if end is None:
        raise ValueError(f"the {schedule!r} schedule decays to 0 at an end step: give end=... (e.g. the "
                         f"number of training steps), or use schedule='constant'")
    return float(fraction) * schedule_factor(schedule, step + 1, end)
