"""ModelSaver (``model_saver`` in the original documentation): snapshots, transfer learning, selected
parameters, files.

* An in-memory snapshot (host copies: dense weights or CSR, biases, prune and
  training masks) is taken by the constructor and by :meth:`ModelSaver.store_model`;
  :meth:`~ModelSaver.restore_model` and :meth:`~ModelSaver.restore_full_model` put it back.
* :meth:`~ModelSaver.transfer_partial_model` copies all layers but the head
  into another model and gives that model a fresh head.
* Selected ("sparse") parameters: the weights under each layer's
  ``training_mask``, and the biases of those layers, kept in memory
  (:meth:`~ModelSaver.store_sparse_parameters`) to be written back later
  (:meth:`~ModelSaver.restore_sparse_parameters`, the forgetting experiments'
  "un-forget"), or in a file.
* Whole models go to checkpoint files (:mod:`._checkpoint`); ``pickle_model`` /
  ``load_model`` (the documentation's names) write and read that safe format:
  nothing is pickled.

Selected-parameter files: format ``sparana.sparse_parameters``, version 1
--------------------------------------------------------------------------

A safetensors file (written atomically, read without running code) holding,
for each layer ``i`` that had a training mask:

* ``layers.{i}.keys``: int64 (n,), the positions of the selected weights in the
  dense (n_in, n_out) matrix (row-major), the same keys as ``layer.value_keys()``;
* ``layers.{i}.values``: float (n,), their values;
* ``layers.{i}.biases``: float (n_out,), the layer's biases.

Metadata: ``format`` = ``"sparana.sparse_parameters"``, ``format_version`` =
``"1"``, ``layers`` (JSON): one entry per layer of the model, null for a layer
without selected parameters or ``{"input_size", "size"}``.
"""

from __future__ import annotations

import numpy as np

from .._backend import DTYPES, to_host
from .._checks import check_finite, check_integer
from ..nn import _initializers as init
from ..nn._keys import locate
from ._checkpoint import load_checkpoint, save_checkpoint
from ._description import layer_spec, layer_tensors, new_layer, restore_layer
from ._header import POSITIVE_INTEGER, check_fields
from ._safetensors import SPARSE_PARAMETERS_FORMAT, VERSIONS, CheckpointError, check_names, check_tensor, header_json
from ._safetensors import read_safetensors, to_json, write_safetensors


class ModelSaver:
    """Snapshots and files for one model; the constructor takes a first snapshot."""

    def __init__(self, model):
        self._model = model
        self._snapshot = None
        self._sparse_parameters = None
        self.store_model()

    @property
    def model(self):
        return self._model

    # ------------------------------------------------------------- snapshots
    def store_model(self):
        """Take a new snapshot of every layer (host copies, whatever the backend)."""
        self._snapshot = [(layer_spec(layer), layer_tensors(layer)) for layer in self._model.layers]

    def restore_model(self):
        """Copy the snapshot back onto the model's backend.

        A layer whose kind (dense/sparse), activation or shape changed since the
        snapshot is replaced by a layer of the snapshot's kind.
        """
        model = self._model
        if model.depth != len(self._snapshot) or model.input_size != self._snapshot[0][0]["input_size"]:
            raise ValueError(f"the snapshot has {len(self._snapshot)} layers and "
                             f"{self._snapshot[0][0]['input_size']} inputs, the model now has {model.depth} layers "
                             f"and {model.input_size} inputs")
        for i, (spec, tensors) in enumerate(self._snapshot):
            restore_layer(model, i, spec, tensors)

    def restore_full_model(self):
        """Restore the snapshot with every layer dense (undoes ``convert_to_sparse``).

        A layer that was sparse in the snapshot becomes dense with its pattern
        as prune mask, as ``Model.convert_to_dense`` does.
        """
        self.restore_model()
        self._model.convert_to_dense()

    # ---------------------------------------------------------------- transfer
    def transfer_partial_model(self, new_model, output_classes=None, bias_constant=0.1):
        """Copy the snapshot's layers, all but the head, into ``new_model`` and give it a new head.

        The head gets ``output_classes`` units (default: its current size),
        Xavier weights (std sqrt(3/(fan_in+fan_out)), drawn from
        ``new_model.rng``) and biases ``bias_constant``. Shapes are checked
        before ``new_model`` changes. Returns ``new_model``.
        """
        snapshot = self._snapshot
        if new_model.depth != len(snapshot):
            raise ValueError(f"new_model must have {len(snapshot)} layers like the snapshot, got {new_model.depth}")
        for i, (spec, _) in enumerate(snapshot[:-1]):
            layer = new_model.layers[i]
            if (layer.input_size, layer.size) != (spec["input_size"], spec["size"]):
                raise ValueError(f"layer {i}: the snapshot's weights are ({spec['input_size']}, {spec['size']}) "
                                 f"(n_in, n_out), new_model's layer is ({layer.input_size}, {layer.size})")
        head = new_model.layers[-1]
        classes = check_integer("output_classes", head.size if output_classes is None else output_classes, low=1)
        check_finite("bias_constant", bias_constant)
        for i, (spec, tensors) in enumerate(snapshot[:-1]):
            restore_layer(new_model, i, spec, tensors)
        fan_in = head.input_size
        if classes != head.size:
            head = new_layer(new_model, dict(layer_spec(head), size=int(classes)))
            new_model.layers[-1] = head
        weights = init.normal(new_model.rng, (fan_in, classes), init.xavier_std(fan_in, classes), new_model.dtype)
        biases = np.full(classes, bias_constant, dtype=new_model.dtype)
        if head.is_sparse:
            head.set_parameters(weights.T, biases)
        else:
            head.prune_mask = None
            head.set_parameters(weights, biases)
        head.training_mask = None
        return new_model

    # ----------------------------------------------------- selected parameters
    def store_sparse_parameters(self):
        """Keep, in memory, the weights under each layer's training mask and those layers' biases.

        Layers without a training mask are skipped. Returns the number of weights kept.
        """
        entries = []
        for layer in self._model.layers:
            if layer.training_mask is None:
                entries.append(None)
                continue
            mask = to_host(layer.training_mask).reshape(-1)
            entries.append({"input_size": layer.input_size, "size": layer.size,
                            "keys": np.asarray(layer.value_keys(), dtype=np.int64)[mask],
                            "values": to_host(layer.values).reshape(-1)[mask],
                            "biases": np.array(to_host(layer.biases))})
        self._sparse_parameters = entries
        return sum(entry["keys"].size for entry in entries if entry is not None)

    def restore_sparse_parameters(self):
        """Write the stored selected weights and biases back; every other weight is left untouched.

        Selected weights that a dense layer's prune mask now removes stay zero;
        a sparse layer must still store every selected weight.
        """
        if self._sparse_parameters is None:
            raise RuntimeError("no selected parameters are stored: call store_sparse_parameters() first")
        self._write_selected(self._sparse_parameters, self._positions(self._sparse_parameters))

    def pickle_sparse_parameters(self, path):
        """Write the stored selected parameters to ``path`` (safetensors; nothing is pickled)."""
        if self._sparse_parameters is None:
            raise RuntimeError("no selected parameters are stored: call store_sparse_parameters() first")
        tensors, layers = {}, []
        for i, entry in enumerate(self._sparse_parameters):
            if entry is None:
                layers.append(None)
                continue
            layers.append({"input_size": int(entry["input_size"]), "size": int(entry["size"])})
            tensors.update({f"layers.{i}.{name}": entry[name] for name in ("keys", "values", "biases")})
        metadata = {"format": SPARSE_PARAMETERS_FORMAT, "format_version": str(VERSIONS[SPARSE_PARAMETERS_FORMAT]),
                    "layers": to_json(layers, "the layer list")}
        return write_safetensors(path, tensors, metadata)

    def load_sparse_parameters(self, path):
        """Read selected parameters written by :meth:`pickle_sparse_parameters` and put them in the model.

        Writes the values and the biases, and sets each layer's training mask to
        the selected weights (None for layers without any). On error nothing changes.
        """
        metadata, tensors = read_safetensors(path, SPARSE_PARAMETERS_FORMAT)
        layers = header_json(path, metadata, "layers")
        if not isinstance(layers, list):
            raise CheckpointError(f"{path}: malformed header: layers must be a list (null or "
                                  f"{{'input_size', 'size'}} per layer), got {layers!r:.200}")
        entries = [None if spec is None else _read_selected(path, i, spec, tensors) for i, spec in enumerate(layers)]
        check_names(str(path), tensors, [f"layers.{i}.{name}" for i, spec in enumerate(layers) if spec is not None
                                         for name in ("keys", "values", "biases")])
        try:
            positions = self._positions(entries)
        except ValueError as exc:
            raise CheckpointError(f"{path}: the selected parameters do not fit the model: {exc}") from exc
        self._write_selected(entries, positions, set_masks=True)
        self._sparse_parameters = entries

    def _positions(self, entries):
        """Per layer, the positions in ``layer.values`` of the stored keys (None: no entry); checks first."""
        model = self._model
        if len(entries) != model.depth:
            raise ValueError(f"selected parameters for {len(entries)} layers, the model has {model.depth}")
        result = []
        for i, (layer, entry) in enumerate(zip(model.layers, entries)):
            if entry is None:
                result.append(None)
                continue
            if (layer.input_size, layer.size) != (entry["input_size"], entry["size"]):
                raise ValueError(f"layer {i}: the selected parameters belong to an ({entry['input_size']}, "
                                 f"{entry['size']}) (n_in, n_out) layer, the model's layer is "
                                 f"({layer.input_size}, {layer.size})")
            positions, found = locate(layer.value_keys(), entry["keys"])
            if not found.all():
                raise ValueError(f"layer {i}: {int((~found).sum())} of the {found.size} selected weights are "
                                 f"not stored in the sparse layer (another pattern, or pruned since)")
            result.append(positions)
        return result

    def _write_selected(self, entries, positions, set_masks=False):
        """Write stored values at ``positions`` (pruned dense weights stay zero), the biases, and the masks."""
        for layer, entry, selected in zip(self._model.layers, entries, positions):
            if entry is None:
                if set_masks:
                    layer.training_mask = None
                continue
            where, values = selected, entry["values"]
            if layer.prune_mask is not None:
                unpruned = to_host(layer.prune_mask).reshape(-1)[where]
                where, values = where[unpruned], values[unpruned]
            xp = layer.backend.xp
            xp.put(layer.values, xp.asarray(where), xp.asarray(values, dtype=layer.values.dtype))
            layer.biases = entry["biases"]  # the layer copies it
            if set_masks:
                mask = np.zeros(layer.values.size, dtype=bool)
                mask[selected] = True
                layer.training_mask = mask.reshape(tuple(layer.values.shape))

    # ------------------------------------------------------------------ files
    def save(self, path, optimizer=None, extra=None):
        """Write the whole model (and optimizer state, and ``extra``) as a checkpoint file."""
        return save_checkpoint(path, self._model, optimizer, extra)

    def load(self, path, optimizer=None):
        """Load a checkpoint file into the model (same architecture required); returns the model."""
        return load_checkpoint(path, self._model, optimizer)

    # The documentation's names, on the safe format.
    pickle_model = save
    load_model = load


def _read_selected(path, i, spec, tensors):
    """One layer's selected parameters read from a file, checked."""
    where = f"{path}, layer {i}"
    check_fields(path, f"layers[{i}]", spec, {key: POSITIVE_INTEGER for key in ("input_size", "size")})
    names = {name: f"layers.{i}.{name}" for name in ("keys", "values", "biases")}
    check_names(where, set(names.values()) & set(tensors), list(names.values()))
    keys, values, biases = (tensors[names[key]] for key in ("keys", "values", "biases"))
    check_tensor(where, names["keys"], keys, (None,), np.int64)
    if values.dtype.type not in DTYPES.values():
        raise CheckpointError(f"{where}: float32 or float64 values expected, got {values.dtype.name}")
    check_tensor(where, names["values"], values, keys.shape, values.dtype)
    check_tensor(where, names["biases"], biases, (spec["size"],), values.dtype)
    size = spec["input_size"] * spec["size"]
    if keys.size and (keys.min() < 0 or keys.max() >= size or np.unique(keys).size != keys.size):
        raise CheckpointError(f"{where}: the keys must be distinct positions in [0, {size})")
    return {"input_size": spec["input_size"], "size": spec["size"], "keys": keys, "values": values, "biases": biases}
