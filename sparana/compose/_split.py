"""Building a submodel: the chosen units of the main model's last layers, plus consolidation units.

Each split hidden layer keeps its chosen units plus, unless ``consolidation='none'``, one
*consolidation unit* standing in for the units left out, so that the submodel's outputs start
close to the main model's:

* ``'original'`` (default): incoming column = z times the row-sum of the removed units' incoming
  weights, bias = z times the sum of their biases, outgoing row = the mean of the removed units'
  outgoing rows; z is the layer's zero fraction from :meth:`Vulcanizer.get_average_zeros`, or
  1.0 (the plain sums) when it has not been computed.
* ``'mean'``: a constant unit (no incoming weights, bias A = the summed mean activation of the
  removed units over the data given to :meth:`Vulcanizer.get_average_zeros`) whose outgoing row
  is the activation-weighted mean of the removed units' rows: it adds exactly the removed units'
  mean contribution to the next layer, the constant that minimises the mean squared error of the
  next layer's pre-activations.
* ``'none'``: no consolidation unit (the independent subnetworks of Yuan et al.'s IST).

Measured on the documentation model after one epoch on MNIST (test set, see the report of
jobs/vulcanize.py): 'mean' lowers the squared distance to the main model's outputs by only 0-8%
and lowers the submodel's starting accuracy a lot (a constant shift of the logits biases the
argmax, e.g. 90% against 96% for sizes [400, 200, 10]), while 'original' starts as close as
'none' or closer (its unit is often inactive: the removed units' summed pre-activation is mostly
negative). So 'original' is the default; after training and melding all three end within 0.2%
accuracy.

Dense main layers with a prune mask give submodels the sliced mask (the consolidation weights
are never pruned), sparse main layers give them the sliced CSR pattern (the consolidation row and
column are stored in full), and a training mask is sliced as well (consolidation weights: not
trained by the selected optimizers). Pruned weights therefore stay pruned in the submodel and
after the meld.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from .._backend import to_host
from ..nn._keys import host_matrix, locate, present_mask
from ..nn._model import Model
from ._plan import SubmodelPlan, layer_shape

CONSOLIDATIONS = ("mean", "original", "none")


def candidate_weights(layer, rows):
    """Host float64 (rows, n_out) weights of a layer, NaN where there is no weight (pruned, not stored)."""
    weights = np.asarray(to_host(layer.dense_weights()), dtype=np.float64)
    present = present_mask(layer)
    if present is not None:
        weights = np.where(present, weights, np.nan)
    return weights if rows is None else weights[rows]


def _owned_entries(layer, rows, columns, sub_width):
    """Flat indices into ``layer.values`` of the weights (rows x columns), and their submodel keys.

    A submodel key is the flat position in the submodel layer's dense
    (n_in, n_out) matrix of width ``sub_width``.
    """
    if not layer.is_sparse:
        main = (rows[:, None] * layer.size + columns[None, :]).reshape(-1)
        sub = (np.arange(rows.size)[:, None] * sub_width + np.arange(columns.size)[None, :]).reshape(-1)
        return main, sub
    inputs, units = np.divmod(layer.value_keys(), layer.size)
    row_position = np.full(layer.input_size, -1)
    row_position[rows] = np.arange(rows.size)
    column_position = np.full(layer.size, -1)
    column_position[columns] = np.arange(columns.size)
    keep = (row_position[inputs] >= 0) & (column_position[units] >= 0)
    main = np.flatnonzero(keep)
    return main, row_position[inputs[keep]] * sub_width + column_position[units[keep]]


def _consolidation(method, layer, following, removed, zero_fraction, mean_activations):
    """(incoming column over all of ``layer``'s inputs, bias, outgoing row over ``following``'s units).

    The incoming column's entry for an incoming consolidation unit is filled in by the caller.
    """
    n_in, n_out_next = layer.input_size, following.size
    if removed.size == 0:
        return np.zeros(n_in), 0.0, np.zeros(n_out_next)
    outgoing = host_matrix(following)
    if method == "original":
        column = zero_fraction * np.asarray(host_matrix(layer)[:, removed].sum(axis=1)).ravel()
        bias = zero_fraction * float(to_host(layer.biases)[removed].sum(dtype=np.float64))
        row = np.asarray(outgoing[removed].mean(axis=0), dtype=np.float64).ravel()
        return column, bias, row
    means = mean_activations[removed]
    total = float(means.sum())
    row = np.asarray(outgoing[removed].T @ means, dtype=np.float64).ravel()
    return np.zeros(n_in), total, (row / total if total else np.zeros(n_out_next))


def build(main, start, chosen, consolidation, zero_fraction, mean_activations, seed):
    """The submodel of main layers start.. keeping ``chosen`` units, and its plan."""
    dtype = main.dtype
    extra = consolidation != "none"
    plan = SubmodelPlan(start=start, chosen=[np.asarray(c, dtype=np.int64) for c in chosen],
                        consolidation=consolidation, sub_index=[], main_index=[], bias_units=[], fixed_index=[],
                        fixed_values=[], fixed_biases=[], value_shapes=[], sizes=[], sub_keys=[], main_shapes=[],
                        main_keys=[])
    layers, specs = [], []
    previous_row = None  # the incoming consolidation row (over this layer's units)
    for i, layer in enumerate(main.layers[start:]):
        final = start + i == main.depth - 1
        rows = np.arange(layer.input_size) if i == 0 else plan.chosen[i - 1]
        columns = np.arange(layer.size) if final else plan.chosen[i]
        extra_in, extra_out = extra and i > 0, extra and not final
        n_in, n_out = rows.size + extra_in, columns.size + extra_out
        main_index, keys = _owned_entries(layer, rows, columns, n_out)
        values = to_host(layer.values).reshape(-1)[main_index]
        fixed_keys, fixed_values, bias = [], [], None
        if extra_out:
            removed = np.setdiff1d(np.arange(layer.size), columns)
            column, bias, next_row = _consolidation(consolidation, layer, main.layers[start + i + 1], removed,
                                                    zero_fraction(start + i),
                                                    None if mean_activations is None else mean_activations[start + i])
            corner = [zero_fraction(start + i) * previous_row[removed].sum()
                      if consolidation == "original" else 0.0] if extra_in else []
            fixed_keys.append(np.arange(n_in) * n_out + columns.size)
            fixed_values.append(np.concatenate([column[rows], corner]))
        if extra_in:
            fixed_keys.append(rows.size * n_out + np.arange(columns.size))
            fixed_values.append(previous_row[columns])
        fixed_keys = np.concatenate(fixed_keys) if fixed_keys else np.zeros(0, dtype=np.int64)
        fixed_values = np.concatenate(fixed_values) if fixed_values else np.zeros(0)
        biases = np.concatenate([to_host(layer.biases)[columns], [bias] if extra_out else []]).astype(dtype)
        all_keys = np.concatenate([keys, fixed_keys])
        all_values = np.concatenate([values, fixed_values.astype(dtype)])
        layers.append(_make_layer(layer, n_in, n_out, all_keys, all_values, biases))
        specs.append((layer, main_index, keys, fixed_keys, n_in, n_out))
        plan.bias_units.append(columns)
        plan.fixed_biases.append(None if bias is None else biases[-1])
        plan.main_shapes.append(layer_shape(layer))
        plan.main_keys.append(layer.value_keys() if layer.is_sparse else None)
        if extra_out:
            previous_row = next_row
    submodel = Model(main.layers[start].input_size, layers, dropout=main.dropout, comp_type=main.comp_type,
                     seed=seed, dtype=dtype, dropout_style=main._dropout_style)
    for sub_layer, (layer, main_index, keys, fixed_keys, n_in, n_out) in zip(submodel.layers, specs):
        positions = _value_positions(sub_layer, np.concatenate([keys, fixed_keys]))
        plan.sub_index.append(positions[:keys.size])
        plan.main_index.append(main_index)
        plan.fixed_index.append(positions[keys.size:])
        plan.fixed_values.append(to_host(sub_layer.values).reshape(-1)[positions[keys.size:]].copy())
        plan.value_shapes.append(tuple(sub_layer.values.shape))
        plan.sizes.append(n_out)
        plan.sub_keys.append(sub_layer.value_keys() if sub_layer.is_sparse else None)
        _carry_masks(layer, sub_layer, main_index, positions[:keys.size], n_in, n_out)
    return submodel, plan


def _make_layer(layer, n_in, n_out, keys, values, biases):
    """A layer of ``layer``'s class holding ``values`` at dense (n_in, n_out) flat positions ``keys``."""
    if layer.is_sparse:  # every given entry is stored, zeros included
        inputs, units = np.divmod(keys, n_out)
        weights = scipy.sparse.csr_matrix((values, (units, inputs)), shape=(n_out, n_in))
    else:
        weights = np.zeros(n_in * n_out, dtype=values.dtype)
        weights[keys] = values
        weights = weights.reshape(n_in, n_out)
    return type(layer)(size=n_out, weights=weights, biases=biases, dropout=layer._own_dropout)


def _value_positions(layer, keys):
    """Flat indices into ``layer.values`` of the dense (n_in, n_out) flat positions ``keys``."""
    if not layer.is_sparse:
        return keys.astype(np.int64)
    positions, found = locate(layer.value_keys(), keys)
    assert found.all(), "a consolidation or owned entry is missing from the pattern"
    return positions


def _carry_masks(layer, sub_layer, main_index, positions, n_in, n_out):
    """Slice the main layer's prune mask and training mask into the submodel layer."""
    if layer.prune_mask is not None:
        mask = np.ones(n_in * n_out, dtype=bool)  # consolidation weights are never pruned
        mask[positions] = to_host(layer.prune_mask).reshape(-1)[main_index]
        sub_layer.prune_mask = mask.reshape(n_in, n_out)
    if layer.training_mask is not None:
        mask = np.zeros(sub_layer.values.size, dtype=bool)  # nor trained by the selected optimizers
        mask[positions] = to_host(layer.training_mask).reshape(-1)[main_index]
        sub_layer.training_mask = mask.reshape(tuple(sub_layer.values.shape))
