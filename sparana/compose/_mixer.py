"""The model mixer: combine the weights of several models of one architecture.

Meant for models fine-tuned from a common training run, "so that the majority
of parameters are the same". Add models (host copies of their weights and
biases), add a statistic per model (MAAV, |W| or your own), optionally rank
them, and write a mix into a model of the same architecture (any backend):

* ``replace_all``: the primary model's weights, replaced by the secondary
  model's where the secondary's statistic marks them important (non-zero,
  e.g. after ``rank_and_zero``);
* ``average_all``: the element-wise mean;
* ``importance_weighted_average``: the mean weighted by each model's
  statistic, falling back to the plain mean where every statistic is zero.

Biases are mixed too: ``average_all`` averages them; the two statistic-driven mixes give each unit the mean statistic of its
incoming weights as the importance of its bias (``replace_all`` takes the
secondary's bias of the units that take more than half of their incoming
weights from it).

All models must share the first model's architecture: layer kinds (dense or
sparse), sizes, sparse patterns and dense prune masks; anything else is
refused with an exception naming the layer. Pruned weights stay zero in the
result. Statistics are host float64 arrays of each layer's ``values`` shape;
NaN (the statistics module's "not a candidate") counts as zero importance.
"""

from __future__ import annotations

import numpy as np

from .._backend import to_host
from .._checks import check_ratio, is_integer
from ..nn._model import Model
from ..sparsity._statistics import absolute_values, maav


class _Architecture:
    """What two models must share to be mixed: per layer, kind, sizes, pattern and prune mask."""

    def __init__(self, model):
        self.layers = []
        for layer in model.layers:
            layer._require_parameters()
            mask = None if layer.is_sparse or layer.prune_mask is None else to_host(layer.prune_mask).copy()
            self.layers.append((layer.is_sparse, layer.input_size, layer.size,
                                np.asarray(layer.value_keys()), mask))

    def units(self, index):
        """The unit (output) of every entry of layer ``index``'s values."""
        _, _, size, keys, _ = self.layers[index]
        return keys % size

    def shape(self, index):
        sparse, n_in, n_out, keys, _ = self.layers[index]
        return (keys.size,) if sparse else (n_in, n_out)

    def check(self, model, what, masks=True):
        """Raise unless ``model`` has this architecture (``masks``: compare dense prune masks too)."""
        if not isinstance(model, Model):
            raise TypeError(f"{what}: a sparana Model expected, got {type(model).__name__}")
        if model.depth != len(self.layers):
            raise ValueError(f"{what} has {model.depth} layers, the mixer's models have {len(self.layers)}")
        for i, (layer, (sparse, n_in, n_out, keys, mask)) in enumerate(zip(model.layers, self.layers)):
            layer._require_parameters()
            kind = "sparse" if sparse else "dense"
            if layer.is_sparse != sparse:
                raise ValueError(f"{what}: layer {i} is {'sparse' if layer.is_sparse else 'dense'}, "
                                 f"the mixer's models have a {kind} layer there")
            if (layer.input_size, layer.size) != (n_in, n_out):
                raise ValueError(f"{what}: layer {i} is {layer.input_size} -> {layer.size}, "
                                 f"the mixer's models have {n_in} -> {n_out}")
            if sparse and not np.array_equal(layer.value_keys(), keys):
                raise ValueError(f"{what}: layer {i}'s sparse pattern differs from the mixer's models "
                                 f"({layer.nnz} stored weights against {keys.size}, or other positions)")
            if masks and not sparse:
                given = None if layer.prune_mask is None else to_host(layer.prune_mask)
                if not _same_mask(given, mask):
                    ones = np.ones((n_in, n_out), dtype=bool)
                    differ = int(np.count_nonzero((ones if given is None else given) !=
                                                  (ones if mask is None else mask)))
                    raise ValueError(f"{what}: layer {i}'s prune mask differs from the mixer's models "
                                     f"at {differ} weights")


def _same_mask(a, b):
    if a is None or b is None:
        return (a is None or a.all()) and (b is None or b.all())
    return np.array_equal(a, b)


def _check_index(name, value, count, what):
    if not is_integer(value, 0, count - 1):
        raise ValueError(f"{name} must be the index of one of the {count} {what}, got {value!r}")
    return int(value)


class ModelMixer:
    """Mix the weights and biases of several models that share an architecture (see the module docstring)."""

    def __init__(self):
        self._architecture = None
        self._parameters = []  # per model: [(values, biases)] host copies, one pair per layer
        self._weight_stats = []  # per statistics slot: [float64 array] one per layer, NaN -> 0

    @property
    def model_count(self):
        """Number of models added."""
        return len(self._parameters)

    @property
    def statistics(self):
        """The statistics per model (slot), one float64 array per layer (ranks after ``rank_and_zero``)."""
        return self._weight_stats

    # ------------------------------------------------------------------ adding
    def _check(self, model, what, masks=True):
        if self._architecture is None:
            self._architecture = _Architecture(model)
        else:
            self._architecture.check(model, what, masks)

    @staticmethod
    def _store(slots, entry, replace, what):
        """Append ``entry`` (``replace`` None or -1), or overwrite slot ``replace``."""
        if replace is None or is_integer(replace, -1, -1):
            slots.append(entry)
            return len(slots) - 1
        slots[_check_index("replace", replace, len(slots), what)] = entry
        return int(replace)

    def add_model(self, model, replace=None):
        """Store host copies of ``model``'s weights and biases; returns its index.

        ``replace``: None (or -1) appends; an index overwrites that model.
        """
        if replace is not None and replace != -1:
            _check_index("replace", replace, len(self._parameters), "models added")
        self._check(model, "the model")
        entry = [(np.array(to_host(layer.values), copy=True), np.array(to_host(layer.biases), copy=True))
                 for layer in model.layers]
        return self._store(self._parameters, entry, replace, "models added")

    def add_stats(self, statistics, replace=None):
        """Store a statistic per weight (one array of ``values`` shape per layer, >= 0; NaN = 0)."""
        if self._architecture is None:
            raise ValueError("add a model first: statistics are checked against the models' layers")
        if replace is not None and replace != -1:
            _check_index("replace", replace, len(self._weight_stats), "statistics added")
        layers = len(self._architecture.layers)
        if not isinstance(statistics, (list, tuple)) or len(statistics) != layers:
            given = len(statistics) if isinstance(statistics, (list, tuple)) else type(statistics).__name__
            raise ValueError(f"statistics: one array per layer ({layers}) expected, got {given}")
        entry = []
        for i, stats in enumerate(statistics):
            stats = np.array(to_host(stats), dtype=np.float64, copy=True)
            if stats.shape != self._architecture.shape(i):
                raise ValueError(f"statistics[{i}] of shape {self._architecture.shape(i)} expected "
                                 f"(the layer's values), got {stats.shape}")
            stats[np.isnan(stats)] = 0.0  # not a candidate: no importance
            if not np.isfinite(stats).all() or (stats < 0).any():
                raise ValueError(f"statistics[{i}] must be finite and >= 0 (importances)")
            entry.append(stats)
        return self._store(self._weight_stats, entry, replace, "statistics added")

    def add_MAAV_stats(self, model, data, replace=None):
        """Add the MAAV statistic (mean over ``data`` of |a_j W_jk|) of ``model``; returns its slot."""
        self._check(model, "the model")
        return self.add_stats(maav(model, data), replace)

    def add_absolute_values(self, model, replace=None):
        """Add the statistic |W| of ``model``; returns its slot."""
        self._check(model, "the model")
        return self.add_stats(absolute_values(model), replace)

    # ----------------------------------------------------------------- ranking
    def rank_and_zero(self, models=None, zero=None):
        """Replace statistics by their 1-based ordinal rank within each layer (1 = smallest, ties by position).

        ``models``: the statistics slots to rank (default all). ``zero`` (a
        fraction q): for every slot except 0 (the primary), ranks below
        q * size are set to 0, so only the top ~(1 - q) stay marked important.
        """
        slots = range(len(self._weight_stats)) if models is None or models is False else models
        slots = [_check_index("models entry", m, len(self._weight_stats), "statistics added") for m in slots]
        zero = None if zero is False else zero  # False: the documentation's way of saying None
        if zero is not None:
            check_ratio("zero", zero)
        for m in slots:
            ranked = []
            for stats in self._weight_stats[m]:
                flat = stats.reshape(-1)
                ranks = np.empty(flat.size)
                ranks[np.argsort(flat, kind="stable")] = np.arange(1, flat.size + 1)
                if zero is not None and m != 0:
                    ranks[ranks < zero * flat.size] = 0
                ranked.append(ranks.reshape(stats.shape))
            self._weight_stats[m] = ranked

    # ------------------------------------------------------------------ mixing
    def _require(self, models=1, stats=()):
        if len(self._parameters) < models:
            raise ValueError(f"this mix needs at least {models} model(s) added, got {len(self._parameters)}")
        for slot in stats:
            if slot >= len(self._weight_stats):
                raise ValueError(f"no statistics for model {slot}: add them with add_MAAV_stats, "
                                 f"add_absolute_values or add_stats (got {len(self._weight_stats)} slot(s))")

    def replace_all(self, model, primary=0, secondary=1):
        """Write the primary's weights, with the secondary's where its statistic is non-zero, into ``model``."""
        count = len(self._parameters)
        primary = _check_index("primary", primary, count, "models added")
        secondary = _check_index("secondary", secondary, count, "models added")
        self._require(stats=(secondary,))
        self._architecture.check(model, "the target model", masks=False)
        mixed = []
        for i, ((w1, b1), (w2, b2), stats) in enumerate(zip(self._parameters[primary], self._parameters[secondary],
                                                           self._weight_stats[secondary])):
            marked = stats != 0
            share = _unit_mean(self._architecture.units(i), marked.reshape(-1).astype(np.float64), b1.size)
            mixed.append((np.where(marked, w2, w1), np.where(share > 0.5, b2, b1)))
        _write(model, mixed)

    def average_all(self, model):
        """Write the element-wise mean of every model's weights and biases into ``model``."""
        self._require()
        self._architecture.check(model, "the target model", masks=False)
        mixed = [(_mean([p[i][0] for p in self._parameters]), _mean([p[i][1] for p in self._parameters]))
                 for i in range(len(self._architecture.layers))]
        _write(model, mixed)

    def importance_weighted_average(self, model):
        """Write sum_m S_m W_m / sum_m S_m into ``model`` (the plain mean where every S_m is zero).

        Needs one statistic per model (slot m for model m); a unit's bias is
        weighted by the mean statistic of its incoming weights.
        """
        count = len(self._parameters)
        self._require(stats=range(count))
        self._architecture.check(model, "the target model", masks=False)
        mixed = []
        for i in range(len(self._architecture.layers)):
            stats = [self._weight_stats[m][i] for m in range(count)]
            units = self._architecture.units(i)
            size = self._parameters[0][i][1].size
            bias_stats = [_unit_mean(units, s.reshape(-1), size) for s in stats]
            mixed.append((_mean([p[i][0] for p in self._parameters], stats),
                          _mean([p[i][1] for p in self._parameters], bias_stats)))
        _write(model, mixed)


model_mixer = ModelMixer


def _unit_mean(units, values, size):
    """Per unit, the mean of ``values`` over its entries (0 for a unit with none)."""
    counts = np.bincount(units, minlength=size)
    sums = np.bincount(units, weights=values, minlength=size)
    return np.divide(sums, counts, out=np.zeros(size), where=counts > 0)


def _mean(arrays, weights=None):
    """The (weighted) element-wise mean, as a float64 array; zero total weight falls back to the plain mean.

    Computed as arrays[0] + mean of the differences, so that identical arrays give themselves exactly.
    """
    base = arrays[0].astype(np.float64)
    differences = [a.astype(np.float64) - base for a in arrays]
    plain = base + sum(differences) / len(arrays)
    if weights is None:
        return plain
    total = sum(weights)
    weighted = sum(w * d for w, d in zip(weights, differences))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, base + weighted / np.where(total > 0, total, 1.0), plain)


def _write(model, mixed):
    """Load per-layer (values, biases) into ``model`` (any backend); pruned weights stay zero."""
    for layer, (values, biases) in zip(model.layers, mixed):
        layer.values[...] = layer.backend.asarray(values.astype(layer.backend.dtype))
        layer.biases = biases  # the setter converts (and copies) it
        if layer.prune_mask is not None:
            layer.values[...] *= layer.prune_mask
