"""The lobotomizer: pruning by weight statistics ("performs a lobotomy")."""

from __future__ import annotations

import numpy as np

from . import _pruning as pruning
from ._backend import to_host
from ._layers import check_ratio
from ._statistics import StatisticsMixin, absolute_values, check_statistics_list


class Lobotomizer(StatisticsMixin):
    """Prune a dense or sparse model by a statistic of its weights.

    Compute a statistic (``get_absolute_values()``, ``get_MAAV(data)``,
    ``get_MAV(data)``, ``get_negative_values()``, ``get_positive_values()``,
    ``get_activation_ranks(data=None)``, ``get_random()`` or
    ``set_statistics``), then prune with ``prune_smallest``. Pruned dense
    weights are zeroed and kept at zero by every optimizer (the layer's
    ``prune_mask``); pruned sparse entries leave the CSR pattern. The
    statistics of pruned weights become NaN, so repeated calls prune further.
    """

    def __init__(self, model, seed=None):
        self.model = model
        self.statistics = None
        self.rng = np.random.default_rng(seed)

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
        if layers is None:
            check_ratio("prune_ratio", prune_ratio)
            included = [prune_final_layer or i < model.depth - 1 for i in range(model.depth)]
            counts = pruning.ratio_counts(stats, prune_ratio, included)
        else:
            counts = pruning.target_counts(model.layers, list(layers))
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
            check_statistics_list(model, self.statistics)
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
            stats = self.statistics[i]
            self.statistics[i] = stats[keep] if layer.is_sparse else np.where(keep, stats, np.nan)

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
