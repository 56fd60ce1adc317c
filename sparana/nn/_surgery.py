"""Model surgery: moving a model to another device, converting layers between dense and sparse, and
removing dead units. None of them changes what the model computes.

These are the bodies of ``Model.convert_comp_type``, ``convert_to_sparse``, ``convert_to_dense`` and
``remove_activations``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from .._backend import Backend, to_host
from .._checks import is_integer
from ._dense import DENSE_LAYERS
from ._keys import dense_mask, host_matrix, present_mask, values_mask
from ._sparse import SPARSE_LAYERS


def convert_comp_type(model, comp_type=None):
    """Move every array to the other backend (or to ``comp_type``) and switch the model to it.

    Every layer's ``version`` changes, so a live optimizer moves its state (moments,
    velocities) to the new device at its next step, values kept. Returns the new comp_type.
    """
    target = {"CPU": "GPU", "GPU": "CPU"}[model.comp_type] if comp_type is None else comp_type
    backend = Backend(target, model.backend.dtype)
    for layer in model.layers:
        layer._move_to(backend) if layer.has_parameters else setattr(layer, "backend", backend)
    model.backend = backend
    return model.comp_type


def convert(model, indices=None, to_sparse=True):
    """Replace the dense layers at ``indices`` (default all) by sparse ones holding their non-zero
    weights, or the sparse ones by dense ones whose prune mask is the pattern. Training masks follow."""
    depth = model.depth
    indices = range(depth) if indices is None else indices
    for i in indices:
        if not is_integer(i, -depth, depth - 1):
            raise ValueError(f"layer indices in [0, {depth}) expected, got {i!r}")
    for i in indices:
        layer = model.layers[i]
        if layer.is_sparse == to_sparse:
            continue
        layer._require_parameters()
        new = (SPARSE_LAYERS if to_sparse else DENSE_LAYERS)[layer.activation](size=layer.size)
        new._own_dropout = layer._own_dropout
        new.bind(model.backend, layer.input_size, model.rng, model.dropout, model._dropout_style)
        if to_sparse:
            new.set_parameters(scipy.sparse.csr_matrix(to_host(layer.weights).T), layer.biases)
        else:
            new.set_parameters(layer.dense_weights(), layer.biases)
            new.prune_mask = present_mask(layer)
        if layer.training_mask is not None:
            new.training_mask = values_mask(new, dense_mask(layer, layer.training_mask))
        model.layers[i] = new


def remove_activations(model, verbose=False):
    """Remove hidden units with no incoming or no outgoing weights; return the new layer sizes.

    A unit with no inputs outputs the constant act(bias); its contribution act(b) * W_next[unit, :]
    is folded into the next layer's biases, so the outputs do not change. Units with no outputs
    contribute nothing. Works on dense and sparse layers whose units can be taken apart (ReLU or
    linear hidden layers).
    """
    for i in range(model.depth - 1):
        layer, following = model.layers[i], model.layers[i + 1]
        if not layer.act.per_unit:
            raise ValueError(f"layer {i} is a {layer.activation} layer: its units cannot be removed one by one")
        w_in, w_out = host_matrix(layer), host_matrix(following)
        incoming = np.asarray(abs(w_in).sum(axis=0)).ravel()
        outgoing = np.asarray(abs(w_out).sum(axis=1)).ravel()
        live = (incoming > 0) & (outgoing > 0)
        if live.all():
            continue
        if not live.any():
            raise ValueError(f"every unit of layer {i} is dead; removing them would disconnect the model")
        no_inputs = (incoming == 0) & (outgoing > 0)
        constant = layer.act.constant(to_host(layer.biases)[no_inputs])
        folded = np.asarray(w_out[no_inputs].T @ constant).ravel() if no_inputs.any() else 0.0
        _keep_units(layer, columns=live)
        _keep_units(following, rows=live)
        following.biases = to_host(following.biases) + folded
    if verbose:
        print("Layer sizes:", model.sizes)
    return model.sizes


def _keep_units(layer, rows=slice(None), columns=slice(None)):
    """Keep only the given input rows / unit columns of a layer, with its biases and masks."""
    masks = [None if m is None else dense_mask(layer, m)[rows][:, columns]
             for m in (layer.prune_mask, layer.training_mask)]
    weights = host_matrix(layer)[rows][:, columns]
    biases = to_host(layer.biases)[columns]
    layer._size = layer.input_size = None
    if layer.is_sparse:
        layer.set_parameters(scipy.sparse.csr_matrix(weights.T), biases)
    else:
        layer._prune_mask = layer._training_mask = None
        layer.set_parameters(weights, biases)
        layer.prune_mask = masks[0]
    layer.training_mask = None if masks[1] is None else values_mask(layer, masks[1])
    layer._clear_cache()
