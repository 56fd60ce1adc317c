"""DistanceTracker: how far apart the classes are at each layer.

Each :meth:`DistanceTracker.checkpoint` records, for every layer's output, a
C x C matrix of mean cosine distances 1 - u.v / (|u| |v|) between samples:

* cell (a, b), a != b: the mean over every pair of a sample of class a and a
  sample of class b (the matrix is symmetric);
* diagonal cell (a, a): the mean over the pairs of *distinct* samples of class a.

A sample whose output at a layer is all zeros (e.g. a ReLU layer where every
unit is off) has no direction: it is left out of that layer's averages. A cell
without any pair (a class missing from the batch, or a class with a single
usable sample on the diagonal) is NaN.

The matrices come from matrix products, not per-pair loops: rows are
normalised to unit length, the unit vectors are summed per class
(S = onehot^T U, C x n), and S S^T holds the summed cosine similarity of every
class pair; on the diagonal the self-pairs (u.u = 1) are subtracted. This is
O(batch * units * C) per layer, on the model's backend, in float64.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._backend import array_module, to_host
from .._checks import is_integer
from ..io._results import save_png


def class_cosine_distances(outputs, class_ids, num_classes):
    """The C x C mean cosine distance matrix (host float64) of batch-major ``outputs`` (B, n).

    ``class_ids`` holds one class id in [0, num_classes) per row. See the module docstring.
    """
    xp = array_module(outputs)
    units = outputs.astype(xp.float64)
    norms = xp.sqrt((units * units).sum(axis=1))
    usable = norms > 0  # all-zero outputs have no direction
    units = units[usable] / norms[usable][:, None]
    ids = class_ids[usable]
    onehot = xp.zeros((ids.shape[0], num_classes))
    onehot[xp.arange(ids.shape[0]), ids] = 1.0
    class_sums = onehot.T @ units
    cosine_sums = class_sums @ class_sums.T
    cosine_sums -= xp.diag(onehot.T @ (units * units).sum(axis=1))  # the self-pairs, u.u (1 up to rounding)
    counts = onehot.sum(axis=0)
    pairs = to_host(counts[:, None] * counts[None, :] - xp.diag(counts))
    distance_sums = pairs - to_host(cosine_sums)
    distance_sums = (distance_sums + distance_sums.T) / 2  # exactly symmetric despite rounding
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, distance_sums / np.maximum(pairs, 1), np.nan)


def _finite_mean(values):
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


class DistanceTracker:
    """Records per-layer class-pair cosine distance matrices of ``model`` over training."""

    def __init__(self, model):
        self._model = model
        self._cosines = []

    @property
    def matrices(self):
        """The recorded matrices: a list over checkpoints of a list over layers of C x C arrays."""
        return self._cosines

    def checkpoint(self, inputs, labels):
        """Record the matrices of every layer's output for a batch; labels are class ids or one-hot rows.

        Returns the list of per-layer matrices just recorded.
        """
        model = self._model
        outputs = model.activations(inputs)[1:]
        class_ids = model.targets(labels, outputs[0].shape[0]).argmax(axis=0)
        matrices = [class_cosine_distances(layer_outputs, class_ids, model.num_classes) for layer_outputs in outputs]
        self._cosines.append(matrices)
        return matrices

    def get_cosines(self, index=None):
        """Per checkpoint, per layer: the mean between-class distance (the mean of the off-diagonal
        cells, NaN cells left out), or with ``index=(a, b)`` the cell of that class pair."""
        if index is None:
            return [[_finite_mean(m[~np.eye(len(m), dtype=bool)]) for m in layers] for layers in self._cosines]
        if not isinstance(index, (tuple, list)) or len(index) != 2:
            raise ValueError(f"index must be a pair of classes (a, b), got {index!r}")
        a, b = (self._class(c) for c in index)
        return [[float(m[a, b]) for m in layers] for layers in self._cosines]

    def get_self_cosines(self, index=None):
        """Per checkpoint, per layer: the mean within-class distance (the mean of the diagonal,
        NaN cells left out), or with ``index=c`` (0 included) the diagonal cell of class c."""
        if index is None:
            return [[_finite_mean(np.diag(m).copy()) for m in layers] for layers in self._cosines]
        c = self._class(index)
        return [[float(m[c, c]) for m in layers] for layers in self._cosines]

    def _class(self, c):
        classes = self._model.num_classes
        if not is_integer(c, 0, classes - 1):
            raise ValueError(f"class indices must be integers in [0, {classes}), got {c!r}")
        return int(c)

    def plot(self, path, checkpoint=-1):
        """Write a PNG heat map of one checkpoint's matrices, one panel per layer; returns the path."""
        if not self._cosines:
            raise ValueError("nothing to plot: call checkpoint(inputs, labels) first")
        if not is_integer(checkpoint, -len(self._cosines), len(self._cosines) - 1):
            raise ValueError(f"checkpoint must be an index in [{-len(self._cosines)}, {len(self._cosines)}), "
                             f"got {checkpoint!r}")
        from matplotlib import colormaps
        from matplotlib.figure import Figure  # no pyplot: no global backend state

        matrices = self._cosines[checkpoint]
        finite = np.concatenate([m[np.isfinite(m)] for m in matrices])
        top = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        cmap = colormaps["viridis"].with_extremes(bad="lightgrey")
        fig = Figure(figsize=(4.2 * len(matrices), 3.8))
        axes = fig.subplots(1, len(matrices), squeeze=False)[0]
        for i, (ax, m) in enumerate(zip(axes, matrices)):
            image = ax.imshow(m, vmin=0.0, vmax=top, cmap=cmap)
            ax.set_title(f"layer {i} ({self._model.layers[i].size} units)")
            ax.set_xlabel("class")
            ax.set_ylabel("class")
            ax.set_xticks(range(len(m)))
            ax.set_yticks(range(len(m)))
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        fig.suptitle(f"Mean cosine distance between classes (checkpoint {checkpoint % len(self._cosines)})")
        fig.tight_layout()
        return save_png(Path(path), fig)
