"""The lobotomizer: pruning by weight statistics ("performs a lobotomy")."""

from __future__ import annotations

import numpy as np

from . import _pruning as pruning
from .._backend import to_host
from .._checks import check_ratio
from ._selection import candidate_count
from ._statistics import StatisticsMixin, absolute_values

ZERO_STATISTICS = ("ranked", "skipped")


class Lobotomizer(StatisticsMixin):
    """Prune a dense or sparse model by a statistic of its weights.

    Compute a statistic (``get_absolute_values()``, ``get_MAAV(data)``,
    ``get_MAV(data)``, ``get_negative_values()``, ``get_positive_values()``,
    ``get_activation_ranks(data=None)``, ``get_random()`` or
    ``set_statistics``), then prune with ``prune_smallest``. Pruned dense
    weights are zeroed and kept at zero by every optimizer (the layer's
    ``prune_mask``); pruned sparse entries leave the CSR pattern. The
    statistics of pruned weights become NaN, so repeated calls prune further.

    ``zero_statistics`` says what happens to weights whose statistic is 0
    (MAAV or MAV of an input that is zero on all the data, such as MNIST's
    border pixels, or of a dead unit; |W| of a weight that is exactly 0):

    * ``'ranked'`` (default): they are ranked like any other weight, so they go
      first. They do nothing on the data, so removing them costs nothing there,
      and a sparsity counts every weight still stored.
    * ``'skipped'``: they are never pruned and not counted: ``prune_ratio`` is
      a fraction of the weights with a non-zero statistic, and a per-layer
      target counts them as already pruned, so the layer keeps more stored
      weights than its target says.
    """

    def __init__(self, model, seed=None, zero_statistics="ranked"):
        if zero_statistics not in ZERO_STATISTICS:
            raise ValueError(f"zero_statistics must be one of {ZERO_STATISTICS}, got {zero_statistics!r}")
        self.model = model
        self.statistics = None
        self.rng = np.random.default_rng(seed)
        self.zero_statistics = zero_statistics

    def get_random(self):
        """Random statistics, so that ``prune_smallest`` removes random weights (a baseline)."""
        stats = []
        for s in absolute_values(self.model):
            random = self.rng.random(s.shape)
            random[np.isnan(s)] = np.nan
            stats.append(random)
        return self.set_statistics(stats)

    def prune_smallest(self, prune_ratio=None, print_stats=False, layers=None, prune_final_layer=False):
        """Remove the weights with the smallest statistics; return the number removed per layer.

        ``prune_ratio``: that fraction of each layer's remaining candidates
        (incremental: 0.5 twice leaves a quarter), every layer but the final
        one unless ``prune_final_layer``. ``layers=[r_0, ..., r_L-1]``:
        cumulative target sparsities per layer (None skips a layer; a target
        below the current sparsity does nothing).
        """
        stats = self._require_statistics()
        model = self.model
        if (prune_ratio is None) == (layers is None):
            raise ValueError("give either prune_ratio (a fraction of the remaining weights) or layers "
                             "(a target sparsity per layer), not both or neither")
        present = None
        if self.zero_statistics == "skipped":  # zero statistics are no candidates, and count as pruned
            stats = [np.where(s == 0, np.nan, s) for s in stats]
            present = [candidate_count(s) for s in stats]
        if layers is None:
            check_ratio("prune_ratio", prune_ratio)
            included = [prune_final_layer or i < model.depth - 1 for i in range(model.depth)]
            counts = pruning.ratio_counts(stats, prune_ratio, included)
        else:
            counts = pruning.target_counts(model.layers, list(layers), present)
        for i, (layer, count) in enumerate(zip(model.layers, counts)):
            if count == 0:
                continue
            keep = pruning.smallest_mask(stats[i], count)
            if print_stats:
                print(f"Pruning {count} parameters from {pruning.present_count(layer)} in layer {i}")
            self._keep(i, keep)
        return counts

    def prune_all_negative(self, layers=None):
        """Prune every negative weight (of the layers i where ``layers[i]`` is true, or of all)."""
        model = self.model
        if layers is not None and len(layers) != model.depth:
            raise ValueError(f"one flag per layer expected ({model.depth}), got {len(layers)}")
        if self.statistics is not None:
            self._require_statistics()
        counts = []
        for i, layer in enumerate(model.layers):
            keep = to_host(layer.values) >= 0
            if (layers is not None and not layers[i]) or keep.all():
                counts.append(0)
                continue
            counts.append(int((~keep).sum()))
            self._keep(i, keep)
        return counts

    def _keep(self, i, keep):
        """Prune layer i to ``keep`` and keep the statistics aligned with what remains."""
        layer = self.model.layers[i]
        layer.keep_only(keep)
        if self.statistics is not None:
            if layer.is_sparse:  # the statistics of the entries kept follow the pattern
                self._follow_patterns()
            else:
                self.statistics[i] = np.where(keep, self.statistics[i], np.nan)

    def get_sparse_masks(self):
        """Make every zero weight of the dense layers pruned (kept at zero); return the masks of what is kept."""
        masks = []
        for layer in self.model.layers:
            present = to_host(layer.values) != 0
            if not layer.is_sparse:
                layer.keep_only(present)
            masks.append(present)
        return masks

    def sparsities(self):
        """Fraction of pruned weights per layer."""
        return [pruning.sparsity(layer) for layer in self.model.layers]
