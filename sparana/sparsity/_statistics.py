"""Per-weight statistics: how important each weight is, by several criteria.

Each function returns one host float64 array per layer, of the shape of that
layer's ``values`` (the dense matrix, or a sparse layer's stored entries).
``NaN`` marks entries that are not candidates (pruned weights; for the
sign-restricted statistics, weights of the other sign): pruning and selection
never pick them.

* ``absolute_values``: |W|.
* ``maav``: mean absolute activated value, mean over the data of |a_j * W_jk|,
  where a is the layer's input (the previous layer's output, dropout off).
* ``mav``: absolute value of the mean activated value, |mean(a_j * W_jk)|.
* ``negative_values`` / ``positive_values``: |W| of the negative (positive)
  weights only.
* ``fan_out_ranks``: each weight's rank (1 = smallest) among the weights
  leaving the same input unit, by |W| or by MAAV.

MAAV and MAV factor as (mean over the data of |a_j| or a_j) times |W_jk|, so
one forward pass and a broadcast give them; nothing is accumulated between
calls.
"""

from __future__ import annotations

import numpy as np

from .._backend import to_host

CRITERIA = ("absolute", "MAAV", "MAV", "negative", "positive")


def _candidates(layer):
    """Host boolean mask (``values`` shape) of the weights still present."""
    if layer.is_sparse:
        return np.ones(layer.nnz, dtype=bool)
    mask = layer.prune_mask
    return np.ones(layer.values.shape, dtype=bool) if mask is None else to_host(mask)


def _finish(layer, stats, extra=None):
    stats = np.asarray(stats, dtype=np.float64)
    keep = _candidates(layer)
    if extra is not None:
        keep = keep & extra
    stats[~keep] = np.nan
    return stats


def absolute_values(model):
    """|W| per layer."""
    return [_finish(layer, np.abs(to_host(layer.values))) for layer in model.layers]


def negative_values(model):
    """|W| of the negative weights per layer; NaN elsewhere."""
    return [_finish(layer, np.abs(v), v < 0) for layer, v in _host_values(model)]


def positive_values(model):
    """|W| of the positive weights per layer; NaN elsewhere."""
    return [_finish(layer, np.abs(v), v > 0) for layer, v in _host_values(model)]


def _host_values(model):
    return [(layer, to_host(layer.values)) for layer in model.layers]


def input_means(model, data, absolute=True, batch_size=4096):
    """Per layer, the mean over ``data`` of each input unit's activation (|a| if ``absolute``).

    One forward pass in evaluation mode (no dropout), in chunks of ``batch_size`` rows.
    """
    data = to_host(data)
    if data.ndim != 2 or data.shape[0] == 0:
        raise ValueError(f"statistics need a non-empty (samples, {model.input_size}) batch, "
                         f"got shape {getattr(data, 'shape', None)}")
    sums = [np.zeros(layer.input_size) for layer in model.layers]
    for start in range(0, data.shape[0], batch_size):
        activations = model.activations(data[start:start + batch_size])
        for i in range(model.depth):
            a = activations[i]
            sums[i] += to_host((abs(a) if absolute else a).sum(axis=0)).astype(np.float64)
    return [s / data.shape[0] for s in sums]


def _activated(model, data, absolute):
    result = []
    for layer, means in zip(model.layers, input_means(model, data, absolute)):
        magnitude = np.abs(to_host(layer.values)).astype(np.float64)
        if layer.is_sparse:
            per_entry = means[to_host(layer.pattern.indices)]
        else:
            per_entry = means[:, None]
        result.append(_finish(layer, np.abs(per_entry * magnitude)))
    return result


def maav(model, data):
    """Mean absolute activated value per weight: mean_x |a_j(x)| * |W_jk|."""
    return _activated(model, data, absolute=True)


def mav(model, data):
    """Absolute mean activated value per weight: |mean_x a_j(x)| * |W_jk|."""
    return _activated(model, data, absolute=False)


def fan_out_ranks(model, statistics=None):
    """Rank (1 = smallest, ties by position) of each weight among its input unit's fan-out.

    ``statistics`` (default |W|) are ranked; non-candidates stay NaN and are not counted.
    """
    statistics = absolute_values(model) if statistics is None else statistics
    ranks = []
    for layer, stats in zip(model.layers, statistics):
        check_statistics(layer, stats)
        if layer.is_sparse:
            groups = to_host(layer.pattern.indices)  # the input unit of every stored entry
        else:
            groups = np.repeat(np.arange(layer.input_size), layer.size).reshape(stats.shape)
        ranks.append(_group_ranks(stats, groups))
    return ranks


def _group_ranks(stats, groups):
    flat, group = stats.reshape(-1), groups.reshape(-1)
    valid = ~np.isnan(flat)
    result = np.full(flat.shape, np.nan)
    index = np.flatnonzero(valid)
    order = index[np.lexsort((flat[index], group[index]))]  # by group, then by statistic
    sorted_groups = group[order]
    starts = np.searchsorted(sorted_groups, sorted_groups, side="left")
    result[order] = np.arange(order.size) - starts + 1
    return result.reshape(stats.shape)


def check_statistics(layer, stats, name="statistics"):
    """Raise unless ``stats`` has the shape of ``layer.values``."""
    shape = tuple(np.shape(stats))
    if shape != tuple(layer.values.shape):
        raise ValueError(f"{name} of shape {tuple(layer.values.shape)} expected for this layer "
                         f"({'stored entries' if layer.is_sparse else '(n_in, n_out)'}), got {shape}")


def check_statistics_list(model, statistics, name="statistics"):
    """Raise unless ``statistics`` is a list with one correctly shaped array per layer."""
    if not isinstance(statistics, (list, tuple)) or len(statistics) != model.depth:
        given = len(statistics) if isinstance(statistics, (list, tuple)) else type(statistics).__name__
        raise ValueError(f"{name}: one array per layer expected ({model.depth}), got {given}")
    for i, (layer, stats) in enumerate(zip(model.layers, statistics)):
        check_statistics(layer, stats, f"{name}[{i}]")


def compute(model, criterion="absolute", data=None):
    """Statistics by name: 'absolute', 'MAAV', 'MAV' (these two need ``data``), 'negative', 'positive'."""
    if criterion in ("MAAV", "MAV"):
        if data is None:
            raise ValueError(f"the {criterion} statistic needs data (a batch of inputs)")
        return maav(model, data) if criterion == "MAAV" else mav(model, data)
    functions = {"absolute": absolute_values, "negative": negative_values, "positive": positive_values}
    if criterion not in functions:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    return functions[criterion](model)



class StatisticsMixin:
    """The statistics methods of the lobotomizer, the parameter selector and the vulcanizer: each
    computes one criterion, stores it in ``self.statistics`` and returns it."""

    model = None
    statistics = None

    def get_absolute_values(self):
        return self.set_statistics(absolute_values(self.model))

    def get_MAAV(self, data):
        return self.set_statistics(maav(self.model, data))

    def get_MAV(self, data):
        return self.set_statistics(mav(self.model, data))

    def get_negative_values(self):
        return self.set_statistics(negative_values(self.model))

    def get_positive_values(self):
        return self.set_statistics(positive_values(self.model))

    def get_activation_ranks(self, data=None):
        """Fan-out ranks of MAAV (with ``data``) or of |W|."""
        base = maav(self.model, data) if data is not None else absolute_values(self.model)
        return self.set_statistics(fan_out_ranks(self.model, base))

    def set_statistics(self, statistics):
        """Use the given per-layer statistics (checked against the model's layers)."""
        check_statistics_list(self.model, statistics)
        self.statistics = [np.asarray(s, dtype=np.float64) for s in statistics]
        self._statistics_patterns = _patterns(self.model)
        return self.statistics

    def _follow_patterns(self):
        """Carry the statistics of sparse layers pruned or rewired since they were computed to the new
        pattern: kept entries keep theirs, new ones get NaN (no candidates until computed again)."""
        serials = getattr(self, "_statistics_patterns", None)
        if self.statistics is None or serials is None or len(serials) != self.model.depth:
            return
        for i, (layer, serial) in enumerate(zip(self.model.layers, serials)):
            if serial is None or getattr(layer, "pattern_serial", None) in (None, serial):
                continue
            carried = layer.carry(self.statistics[i], serial, fill=np.nan)
            if carried is None:
                raise RuntimeError(f"the statistics of layer {i} were computed for an earlier pattern (the layer "
                                   f"was rewired or pruned more than once since): compute them again")
            self.statistics[i] = carried
        self._statistics_patterns = _patterns(self.model)

    def _require_statistics(self):
        if self.statistics is None:
            raise RuntimeError("no statistics yet: call get_absolute_values(), get_MAAV(data) or another "
                               "statistics method first")
        self._follow_patterns()
        check_statistics_list(self.model, self.statistics)
        return self.statistics


def _patterns(model):
    """Each layer's pattern serial (None for dense layers), to tell when statistics must follow."""
    return [getattr(layer, "pattern_serial", None) for layer in model.layers]
