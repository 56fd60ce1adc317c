"""A model as plain data: its architecture (JSON-ready) and host copies of every layer's tensors,
and back: a model built from an architecture, layers loaded from tensors.

The checkpoint files (:mod:`._checkpoint`), the saver's snapshots (:mod:`._saver`) and the
cluster's payloads all describe models this way.
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse

from .._backend import to_host
from ..kernels import SparsePattern
from ..nn._dense import DENSE_LAYERS
from ..nn._model import Model
from ..nn._sparse import SPARSE_LAYERS
from ._safetensors import CheckpointError, check_names, check_tensor

LAYER_CLASSES = {"dense": DENSE_LAYERS, "sparse": SPARSE_LAYERS}

def layer_spec(layer):
    """A layer's architecture entry (JSON-ready)."""
    own = layer._own_dropout
    return {"kind": "sparse" if layer.is_sparse else "dense", "activation": layer.activation,
            "size": int(layer.size), "input_size": int(layer.input_size),
            "dropout": None if own is None else float(own)}


def describe_model(model):
    """The model's architecture entry (JSON-ready; the format is in :mod:`._checkpoint`)."""
    seed = model.seed
    return {"input_size": int(model.input_size), "dtype": np.dtype(model.dtype).name,
            "dropout": None if model.dropout is None else float(model.dropout),
            "dropout_style": model._dropout_style,
            "seed": int(seed) if isinstance(seed, numbers.Integral) else None,
            "layers": [layer_spec(layer) for layer in model.layers]}


def model_from_description(arch, comp_type=None, seed=None):
    """A new :class:`Model` (without parameters) of the architecture :func:`describe_model` gave."""
    layers = [layer_class(spec)(size=spec["size"], dropout=spec["dropout"]) for spec in arch["layers"]]
    return Model(arch["input_size"], layers, dropout=arch["dropout"], comp_type=comp_type,
                 seed=arch["seed"] if seed is None else seed, dtype=arch["dtype"],
                 dropout_style=arch["dropout_style"])


def layer_tensors(layer):
    """Host copies of a layer's weights, biases and masks, named as in the file (without prefix)."""
    layer._require_parameters()
    tensors = {"biases": to_host(layer.biases, copy=True)}
    if layer.is_sparse:
        matrix = layer.to_scipy()  # a copy already
        tensors.update(data=matrix.data, indices=matrix.indices.astype(np.int64),
                       indptr=matrix.indptr.astype(np.int64))
    else:
        tensors["weights"] = to_host(layer.weights, copy=True)
        if layer.prune_mask is not None:
            tensors["prune_mask"] = to_host(layer.prune_mask, copy=True)
    if layer.training_mask is not None:
        tensors["training_mask"] = to_host(layer.training_mask, copy=True)
    return tensors


def apply_layer_tensors(layer, tensors):
    """Set a layer's parameters and masks to copies of ``tensors`` (as :func:`layer_tensors` gives).

    The layer copies what it is given, once, so ``tensors`` are passed as they are.
    """
    biases = tensors["biases"]
    if layer.is_sparse:
        matrix = scipy.sparse.csr_matrix((tensors["data"], tensors["indices"], tensors["indptr"]),
                                         shape=(layer.size, layer.input_size))
        layer.set_parameters(matrix, biases)  # the canonical CSR keeps its entry order
    else:
        layer.prune_mask = None  # or set_parameters would apply the old mask to the new weights
        layer.set_parameters(tensors["weights"], biases)
        if "prune_mask" in tensors:
            layer.prune_mask = tensors["prune_mask"]
    layer.training_mask = tensors.get("training_mask")


def check_layer_tensors(where, spec, tensors, dtype):
    """Raise CheckpointError unless ``tensors`` are complete and fit the layer ``spec``."""
    n_in, n_out = spec["input_size"], spec["size"]
    if spec["kind"] == "dense":
        check_names(where, tensors, ("weights", "biases"), ("prune_mask", "training_mask"))
        check_tensor(where, "weights", tensors["weights"], (n_in, n_out), dtype)
        values_shape = (n_in, n_out)
        if "prune_mask" in tensors:
            check_tensor(where, "prune_mask", tensors["prune_mask"], values_shape, bool)
    else:
        check_names(where, tensors, ("data", "indices", "indptr", "biases"), ("training_mask",))
        check_tensor(where, "data", tensors["data"], (None,), dtype)
        values_shape = tuple(tensors["data"].shape)
        check_tensor(where, "indices", tensors["indices"], values_shape, np.int64)
        check_tensor(where, "indptr", tensors["indptr"], (n_out + 1,), np.int64)
        try:
            SparsePattern(tensors["indptr"], tensors["indices"], (n_out, n_in))
        except ValueError as exc:
            raise CheckpointError(f"{where}: invalid CSR structure: {exc}") from exc
    check_tensor(where, "biases", tensors["biases"], (n_out,), dtype)
    if "training_mask" in tensors:
        check_tensor(where, "training_mask", tensors["training_mask"], values_shape, bool)


def layer_class(spec):
    return LAYER_CLASSES[spec["kind"]][spec["activation"]]


def new_layer(model, spec):
    """A fresh layer of ``spec`` bound to ``model``'s backend (not yet holding parameters)."""
    layer = layer_class(spec)(size=spec["size"], dropout=spec["dropout"])
    layer.bind(model.backend, spec["input_size"], model.rng, model.dropout, model._dropout_style)
    return layer


def _same_shape(layer, spec):
    return ("sparse" if layer.is_sparse else "dense") == spec["kind"] and layer.activation == spec["activation"] \
        and (layer.input_size, layer.size) == (spec["input_size"], spec["size"])


def restore_layer(model, i, spec, tensors):
    """Put ``tensors`` into layer ``i``, in place when it has ``spec``'s kind and shape, else in a new layer."""
    layer = model.layers[i]
    if not _same_shape(layer, spec):
        layer = new_layer(model, spec)
        model.layers[i] = layer
    apply_layer_tensors(layer, tensors)


def architecture_mismatch(saved, model):
    """A sentence naming the first difference between a saved architecture and ``model``, or None."""
    given = describe_model(model)
    for key in ("input_size", "dtype", "dropout", "dropout_style"):
        if saved[key] != given[key]:
            return f"{key}: the checkpoint has {saved[key]!r}, the model has {given[key]!r}"
    if len(saved["layers"]) != len(given["layers"]):
        return f"depth: the checkpoint has {len(saved['layers'])} layers, the model has {len(given['layers'])}"
    for i, (a, b) in enumerate(zip(saved["layers"], given["layers"])):
        for key in ("kind", "activation", "input_size", "size", "dropout"):
            if a[key] != b[key]:
                return f"layer {i} {key}: the checkpoint has {a[key]!r}, the model has {b[key]!r}"
    return None
