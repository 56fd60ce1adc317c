"""Keys: where each entry of a layer's ``values`` sits in its dense (n_in, n_out) weight matrix.

``layer.value_keys()`` gives, for every entry of ``values``, its flat position ``row * n_out + col``
in the dense (n_in, n_out) matrix: all positions for a dense layer, the stored ones for a sparse
layer. Keys tie per-entry data to weights whatever the layer's kind: optimizer state, selected
parameters in files, submodel entries. This module matches keys and converts masks between the
``values`` shape and the dense one; everything here is host NumPy.
"""

from __future__ import annotations

import numpy as np

from .._backend import to_host


def locate(keys, wanted):
    """(positions, found): the index in ``keys`` of each of ``wanted``, and whether it is there at all.

    ``keys`` are distinct (in any order); where ``found`` is False the position is meaningless.
    """
    keys, wanted = np.asarray(keys), np.asarray(wanted)
    if not keys.size:
        return np.zeros(wanted.size, dtype=np.int64), np.zeros(wanted.size, dtype=bool)
    order = np.argsort(keys, kind="stable")
    positions = order[np.minimum(np.searchsorted(keys[order], wanted), keys.size - 1)]
    return positions, keys[positions] == wanted


def dense_mask(layer, mask):
    """A boolean (n_in, n_out) host matrix from a mask of the layer's ``values`` shape."""
    dense = np.zeros((layer.input_size, layer.size), dtype=bool)
    dense.reshape(-1)[layer.value_keys()] = to_host(mask).reshape(-1)
    return dense


def values_mask(layer, dense):
    """The layer's ``values``-shaped mask read from a boolean (n_in, n_out) matrix."""
    return dense.reshape(-1)[layer.value_keys()].reshape(tuple(layer.values.shape))


def present_mask(layer):
    """Boolean (n_in, n_out) host matrix of the weights the layer has: stored, or not pruned (None: all)."""
    if layer.is_sparse:
        return dense_mask(layer, np.ones(layer.nnz, dtype=bool))
    return None if layer.prune_mask is None else to_host(layer.prune_mask)


def host_matrix(layer):
    """The layer's weights as an (n_in, n_out) host matrix: NumPy for dense, SciPy CSC for sparse."""
    if layer.is_sparse:
        return layer.to_scipy().T.tocsc()
    return to_host(layer.weights)
