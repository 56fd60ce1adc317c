"""Mixing as a reduction: the workers sum their models among themselves, the driver gets one sum.

A worker turns its trained model into a *contribution*: per layer, in the
model's float type (computed in float64), the change of its weights and biases over the round (trained minus the
round's starting weights), and for importance mixing also the statistic S and
S times the change. Contributions add up element-wise, so the workers combine
them pairwise in a tree, ``ceil(log2 n)`` levels deep, through the object
store; whatever the number of workers, the driver receives one contribution
and writes

* average:    start + sum(d) / n
* importance: start + sum(S d) / sum(S), or the average where sum(S) is 0

which is the model mixer's ``average_all`` / ``importance_weighted_average``
of the trained models (the mean of start + d_m), up to summation order. A
bias's statistic is the mean statistic of its unit's incoming weights, as in
the mixer; NaN statistics count as zero importance.
"""

from __future__ import annotations

import numpy as np

from .._backend import to_host


def unit_means(layer, values):
    """Per unit of ``layer``, the mean of ``values`` (of the layer's ``values`` shape) over its entries."""
    units = np.asarray(layer.value_keys()) % layer.size
    counts = np.bincount(units, minlength=layer.size)
    sums = np.bincount(units, weights=values.reshape(-1), minlength=layer.size)
    return np.divide(sums, counts, out=np.zeros(layer.size), where=counts > 0)


def contribution(model, start, statistics=None):
    """The trained ``model``'s contribution (see the module docstring) against the ``start`` payload.

    ``start`` is the payload the round began with (``model_payload``);
    ``statistics`` one array per layer (of each layer's ``values`` shape) for
    importance mixing, else None.
    """
    layers = []
    for i, (layer, begun) in enumerate(zip(model.layers, start["layers"])):
        weights = np.asarray(to_host(layer.values), dtype=np.float64)
        biases = np.asarray(to_host(layer.biases), dtype=np.float64)
        before = begun["data"] if layer.is_sparse else begun["weights"]
        entry = {"weights": weights - before.reshape(weights.shape), "biases": biases - begun["biases"]}
        if statistics is not None:
            s = np.nan_to_num(np.asarray(to_host(statistics[i]), dtype=np.float64).reshape(weights.shape), nan=0.0)
            s_bias = unit_means(layer, s)
            entry.update(weights_s=s, weights_sd=s * entry["weights"], biases_s=s_bias,
                         biases_sd=s_bias * entry["biases"])
        # what travels has the model's precision: a change is small, so float32 keeps it well
        layers.append({name: array.astype(model.dtype, copy=False) for name, array in entry.items()})
    return {"count": 1, "layers": layers}


def combine(a, b):
    """The sum of two contributions (a new one; the inputs are left as they are)."""
    return {"count": a["count"] + b["count"],
            "layers": [{name: x[name] + y[name] for name in x} for x, y in zip(a["layers"], b["layers"])]}


def apply(model, total):
    """Write the mix that the summed contribution ``total`` gives into ``model`` (holding the start weights)."""
    n = total["count"]
    for layer, entry in zip(model.layers, total["layers"]):
        entry = {name: np.asarray(array, dtype=np.float64) for name, array in entry.items()}
        for kind in ("weights", "biases"):
            change = entry[kind] / n
            if f"{kind}_s" in entry:
                weight = entry[f"{kind}_s"]
                with np.errstate(invalid="ignore", divide="ignore"):
                    change = np.where(weight > 0, entry[f"{kind}_sd"] / np.where(weight > 0, weight, 1.0), change)
            current = layer.values if kind == "weights" else layer.biases
            mixed = np.asarray(to_host(current), dtype=np.float64).reshape(change.shape) + change
            if kind == "weights":
                layer.values[...] = layer.backend.asarray(mixed.astype(layer.backend.dtype)).reshape(layer.values.shape)
                if layer.prune_mask is not None:
                    layer.values[...] *= layer.prune_mask
            else:
                layer.biases = mixed


def tree(items, combine_pair):
    """Reduce ``items`` pairwise, level by level: [a, b, c] -> [combine(a, b), c] -> one item.

    ``combine_pair(left_index, left, right)`` makes each sum; the index is the
    position, among the workers, of the left operand's first contribution
    (the worker that computes that sum on Ray). The pairing is the same for
    every pool, so Ray and in-process pools give the same bits.
    """
    level = list(enumerate(items))
    while len(level) > 1:
        nxt = []
        for k in range(0, len(level) - 1, 2):
            (i, left), (_, right) = level[k], level[k + 1]
            nxt.append((i, combine_pair(i, left, right)))
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0][1]


def nbytes(value):
    """Bytes of the NumPy arrays held (at any depth) in dicts, lists and tuples of ``value``."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    return 0
