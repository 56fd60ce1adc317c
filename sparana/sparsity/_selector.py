"""The parameter selector: choose which weights a selected optimizer may train.

A "precursor to the vulcanizer": it does not make training cheaper, it picks
a subset of the weights (by a statistic of their importance, at random, or
from disjoint random subsets) and writes each layer's ``training_mask``, which
:func:`~sparana.SelectedAdamOptimizer` and :func:`~sparana.SelectedSGDOptimizer`
obey. Used to study forgetting: train a new task on the weights the old task
needs least, plus the output weights of the new classes.
"""

from __future__ import annotations

import numpy as np

from . import _selection as selection
from .._backend import to_host
from .._checks import check_integer, check_ratio, is_integer
from ._statistics import StatisticsMixin, absolute_values


class ParameterSelector(StatisticsMixin):
    """Writes per-layer training masks chosen from weight statistics.

    ``ParameterSelector(model, seed=None)``; ``seed`` (or a Generator) drives
    the random methods (``get_top_gaussian``, ``get_random``,
    ``initialize_subsets``).

    Statistics: ``get_absolute_values()``, ``get_MAAV(data)``,
    ``get_MAV(data)`` (and the other methods of the lobotomizer), or
    ``set_statistics(list)``: one host array per layer of the shape of the
    layer's ``values``. NaN entries, and weights pruned from the model, are
    not candidates and are never selected.

    Selection (``get_top``, ``get_bottom``, ``get_top_gaussian``,
    ``get_random``) takes either ``ratio`` (every layer) or
    ``layers=[r_0, ..., r_{L-1}]`` (one ratio per layer; None leaves that
    layer's mask as it is). A ratio r selects k = floor(r * candidates) of the
    layer's candidate weights -- the unpruned weights with a statistic, not
    all n_in * n_out entries; r = 0 selects none (an all-False mask). With
    ``subset=s`` (after ``initialize_subsets(n)``, ids 0..n-1) only the
    weights of random subset s are candidates, so the ratio is a fraction of
    the subset. Each selection replaces the masks of the layers it touches;
    output classes added with ``add_output_class`` stay trainable across
    selections until ``clear_masks()``.
    """

    def __init__(self, model, seed=None):
        self.model = model
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.statistics = None
        self._subsets = None
        self._n_subsets = None
        self._ratios = [None] * model.depth
        self._output_classes = []

    # ------------------------------------------------------------- selections
    def get_top(self, ratio=None, layers=None, subset=None):
        """Select the weights with the largest |statistic|; returns the masks written (None: untouched)."""
        return self._select(selection.get_k_biggest, ratio, layers, subset)

    def get_bottom(self, ratio=None, layers=None, subset=None):
        """Select the weights with the smallest |statistic| (the least important)."""
        return self._select(selection.get_k_smallest, ratio, layers, subset)

    def get_top_gaussian(self, ratio=None, std=None, layers=None, subset=None):
        """Select weights at random, biased towards the largest |statistic|.

        Ranks from the top are drawn from a half-normal of scale
        ``std * candidates / 2`` without replacement (``get_normal_high``):
        std = 0 is ``get_top``, a large std tends to uniform. ``std`` is a
        fraction of the number of candidates.
        """
        if std is None:
            raise ValueError("get_top_gaussian needs std (the spread as a fraction of the candidates, e.g. 0.1)")
        selection.check_std(std)
        return self._select(lambda s, r: selection.get_normal_high(s, r, std, rng=self.rng), ratio, layers, subset)

    def get_random(self, ratio=None, layers=None, subset=None):
        """Select weights uniformly at random among the candidates (a baseline).

        Needs no statistics; when some are set, their NaN entries are still excluded.
        """
        return self._select(lambda s, r: selection.get_uniform(s, r, rng=self.rng), ratio, layers, subset,
                            needs_statistics=False)

    def _select(self, choose, ratio, layers, subset, needs_statistics=True):
        ratios = self._layer_ratios(ratio, layers)
        subsets = self._subset_ids(subset)
        present = absolute_values(self.model)  # NaN at pruned weights
        stats = self._require_statistics() if needs_statistics or self.statistics is not None else present
        masks = []
        for i, (layer, r) in enumerate(zip(self.model.layers, ratios)):
            if r is None:
                masks.append(None)
                continue
            candidates = np.where(np.isnan(present[i]), np.nan, stats[i])
            if subsets is not None:
                candidates[subsets[i] != subset] = np.nan
            mask = choose(candidates, r)
            if i == self.model.depth - 1:
                mask |= self._output_mask(layer, self._output_classes)
            layer.training_mask = mask
            self._ratios[i] = float(r)
            masks.append(mask)
        return masks

    def _layer_ratios(self, ratio, layers):
        depth = self.model.depth
        if (ratio is None) == (layers is None):
            raise ValueError("give either ratio (for every layer) or layers (one ratio or None per layer), "
                             f"not both or neither; got ratio={ratio!r}, layers={layers!r}")
        if layers is None:
            check_ratio("ratio", ratio)
            return [ratio] * depth
        if not isinstance(layers, (list, tuple)) or len(layers) != depth:
            given = len(layers) if isinstance(layers, (list, tuple)) else type(layers).__name__
            raise ValueError(f"layers must list one ratio (or None) per layer ({depth}), got {given}")
        for i, r in enumerate(layers):
            if r is not None:
                check_ratio(f"layers[{i}]", r)
        return list(layers)

    # ---------------------------------------------------------------- subsets
    def initialize_subsets(self, n):
        """Split every layer's weights into ``n`` random disjoint subsets of (nearly) equal size.

        Returns the per-layer arrays of subset ids 0..n-1 (``values`` shape);
        ``subset=s`` in the selection methods then restricts them to subset s.
        """
        n = check_integer("the number of subsets", n, low=1)
        self._subsets = [(self.rng.permutation(layer.values.size) % n).reshape(layer.values.shape)
                         for layer in self.model.layers]
        self._n_subsets = int(n)
        return self._subsets

    @property
    def subsets(self):
        """Per-layer subset ids from ``initialize_subsets`` (None before)."""
        return self._subsets

    def _subset_ids(self, subset):
        if subset is None:
            return None
        if self._subsets is None:
            raise ValueError(f"subset={subset!r} needs initialize_subsets(n) first")
        n = self._n_subsets
        if not is_integer(subset, 0, n - 1):
            raise ValueError(f"subset must be an integer id in [0, {n}) (from initialize_subsets({n})), "
                             f"got {subset!r}")
        for i, (layer, ids) in enumerate(zip(self.model.layers, self._subsets)):
            if ids.shape != tuple(layer.values.shape):
                raise ValueError(f"layer {i} changed shape since initialize_subsets (ids of shape {ids.shape}, "
                                 f"weights of shape {tuple(layer.values.shape)}): call it again")
        return self._subsets

    # ---------------------------------------------------------- output classes
    def add_output_class(self, output_class):
        """Make every weight into output unit ``output_class`` (or each of a list) trainable.

        Sets column c of the last layer's mask (for a sparse last layer, the
        stored entries of unit c), keeping what the mask already selects.
        """
        classes = list(output_class) if isinstance(output_class, (list, tuple, np.ndarray)) else [output_class]
        n = self.model.num_classes
        for c in classes:
            if not is_integer(c, 0, n - 1):
                raise ValueError(f"output class must be an integer in [0, {n}) (the last layer has {n} units), "
                                 f"got {c!r}")
        layer = self.model.layers[-1]
        current = layer.training_mask
        mask = np.zeros(layer.values.shape, dtype=bool) if current is None else to_host(current).copy()
        layer.training_mask = mask | self._output_mask(layer, classes)
        self._output_classes = sorted(set(self._output_classes) | {int(c) for c in classes})
        return layer.training_mask

    @staticmethod
    def _output_mask(layer, classes):
        """The present weights into the given output units, as a mask of ``values``' shape."""
        units = np.asarray(layer.value_keys()) % layer.size  # value_keys: flat (n_in, n_out) positions
        mask = np.isin(units, classes).reshape(layer.values.shape)
        if layer.prune_mask is not None:
            mask &= to_host(layer.prune_mask)
        return mask

    @property
    def output_classes(self):
        """Output classes added with ``add_output_class`` (sorted)."""
        return list(self._output_classes)

    # ------------------------------------------------------------------ report
    @property
    def ratios(self):
        """The ratio last selected per layer (None: never selected since the last ``clear_masks``)."""
        return list(self._ratios)

    def trainable_fractions(self):
        """Per layer, the fraction of its weights (``values``) under the training mask (None: no mask)."""
        return [None if layer.training_mask is None else float(to_host(layer.training_mask).mean())
                for layer in self.model.layers]

    def print_ratios(self):
        """Print the ratios per layer, the trainable fractions, and the output classes added."""
        print(f"The ratios of parameters for each layer are: {self.ratios}")
        fractions = [None if f is None else round(f, 6) for f in self.trainable_fractions()]
        print(f"Fraction of each layer's weights under its training mask: {fractions}")
        if self._output_classes:
            print(f"The weights into output classes {self._output_classes} have been added")
        else:
            print("No output class weights have been added")

    def clear_masks(self):
        """Remove every layer's training mask; forget the ratios and the output classes."""
        for layer in self.model.layers:
            layer.training_mask = None
        self._ratios = [None] * self.model.depth
        self._output_classes = []
