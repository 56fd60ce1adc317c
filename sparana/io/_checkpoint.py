"""Checkpoint files: a model (and optionally its optimizer) in a versioned safetensors file.

A checkpoint is a safetensors file (see :mod:`._safetensors`): an 8-byte header
length, a JSON header, then raw little-endian tensor bytes. Reading it never
executes code: there is no pickle anywhere. The model's part of the file is its
description (:mod:`._description`); the header is checked by :mod:`._header`.

Format ``sparana.checkpoint``, version 1
========================================

Tensors (``i`` counts layers from 0; float tensors have the architecture's dtype):

* ``layers.{i}.weights``: dense layer, float (n_in, n_out).
* ``layers.{i}.data``, ``layers.{i}.indices``, ``layers.{i}.indptr``: sparse
  layer, the CSR matrix of shape (n_out, n_in) (sorted indices, no duplicates):
  float (nnz,), int64 (nnz,), int64 (n_out + 1,).
* ``layers.{i}.biases``: float (n_out,).
* ``layers.{i}.prune_mask``: only for a dense layer with a prune mask, bool (n_in, n_out).
* ``layers.{i}.training_mask``: only where one is set, bool of the shape of the
  layer's ``values`` ((n_in, n_out) dense, (nnz,) sparse).
* ``optimizer.{i}.{kind}.keys``: with an optimizer, one per state slot (kind
  'weights' or 'biases'), int64 (n,): the positions of the trained entries in
  the dense (n_in, n_out) matrix, row-major (for biases: unit indices).
* ``optimizer.{i}.{kind}.{name}``: float (n,), one per state array of the slot
  ('m' and 'v' for Adam, 'velocity' for SGD with momentum, 'accumulator'...).

Metadata (the header's ``__metadata__``; every value is a string, JSON where noted):

* ``format``: ``"sparana.checkpoint"``; ``format_version``: ``"1"``.
* ``architecture`` (JSON): ``{"input_size", "dtype", "dropout", "dropout_style", "seed",
  "layers": [{"kind": "dense"|"sparse", "activation", "size", "input_size", "dropout"}]}``;
  ``seed`` is the model's seed when it was an int (else null), a layer's ``dropout`` is
  its own override (usually null).
* ``rng_state`` (JSON): the model's NumPy bit generator state, so that dropout draws
  continue where they stopped.
* ``optimizer`` (JSON, only when an optimizer was saved): ``{"class", "steps",
  "hyperparameters": {constructor arguments}, "bitmasks": bool, "slots": [{"layer", "kind",
  "shape": [n_in, n_out], "state": [state names]}]}``. Bitmask arrays are not stored. The
  hyper-parameters' values are checked by the optimizer's constructor when
  ``build_optimizer`` uses them; an optimizer given to ``load_into`` keeps its own.
* ``extra`` (JSON, only when given): the caller's dict (experiment name, round, seeds...).

:func:`read_checkpoint` with ``tensors=False`` reads only the header, so the
architecture and ``extra`` are cheap to get. Every header field is checked when
the file is read (a missing key, a wrong type, a value out of range, an unknown
key: a :class:`CheckpointError` that names the field), so nothing is built or
loaded from a malformed header. Readers accept exactly the versions they know;
any change to tensor names or meanings bumps the version.
Loading into an existing model requires the same architecture (every field
but ``seed``) and checks the whole file before anything changes; the random
state is restored when the model's bit generator is of the saved kind (PCG64
unless the caller passed another Generator). Files are written atomically
(:mod:`._atomic`: a temporary file in the same folder, flushed and fsynced,
then ``os.replace``), so the target name never holds half a file, and with the
mode of the user's umask.
"""

from __future__ import annotations

import numpy as np

from .._backend import DTYPES
from ..nn._optimizers import AdadadOptimizer, AdamOptimizer, MadadadOptimizer, SGDOptimizer
from ._description import (
    apply_layer_tensors,
    architecture_mismatch,
    check_layer_tensors,
    describe_model,
    layer_tensors,
    model_from_description,
)
from ._header import check_architecture, check_optimizer_entry, check_rng_entry, check_rng_state, optional_object
from ._safetensors import FORMAT, VERSIONS, CheckpointError, check_names, check_tensor, header_json
from ._safetensors import read_safetensors, to_json, write_safetensors

OPTIMIZER_CLASSES = {cls.__name__: cls for cls in (SGDOptimizer, AdamOptimizer, MadadadOptimizer, AdadadOptimizer)}
# Optimizer attributes that are constructor arguments of the same name, where the class has them.
_OPTIONAL_HYPERPARAMETERS = ("momentum", "beta1", "beta2", "epsilon", "friction")


def optimizer_config(optimizer):
    """The optimizer's class and constructor arguments (JSON-ready); bitmasks are only flagged."""
    hyper = {"learning_rate": optimizer.learning_rate, "l1_constant": optimizer.l1, "l2_constant": optimizer.l2,
             "loss": optimizer.loss, "regularization": optimizer.regularization,
             "clip": optimizer.clip or None, "backward_layers": optimizer.backward_layers,
             "selected": optimizer.selected, "train_final_layer": optimizer.train_final_layer,
             "train_biases": optimizer.train_biases, "reduction": optimizer.reduction}
    hyper.update({name: getattr(optimizer, name) for name in _OPTIONAL_HYPERPARAMETERS if hasattr(optimizer, name)})
    return {"class": type(optimizer).__name__, "hyperparameters": hyper, "bitmasks": optimizer.bitmasks is not None}


def optimizer_tensors(state):
    """Split ``optimizer.state_dict()`` into tensors and the JSON slot list."""
    tensors, slots = {}, []
    for (i, kind), entry in state["slots"].items():
        names = sorted(set(entry) - {"keys", "shape"})
        prefix = f"optimizer.{i}.{kind}."
        tensors[prefix + "keys"] = np.asarray(entry["keys"], dtype=np.int64)
        tensors.update({prefix + name: np.asarray(entry[name]) for name in names})
        slots.append({"layer": int(i), "kind": kind, "shape": [int(s) for s in entry["shape"]], "state": names})
    return tensors, slots


# ----------------------------------------------------------------------- checkpoint
class Checkpoint:
    """A checkpoint file's contents: ``version``, ``architecture``, ``extra``, ``optimizer``...

    Build a model with :meth:`build_model`, load into an existing one with
    :meth:`load_into`. ``tensors`` is None when the file was read with
    ``tensors=False`` (header only).
    """

    def __init__(self, path, metadata, tensors):
        self.path = path
        self.format = metadata["format"]
        self.version = int(metadata["format_version"])
        self.architecture = header_json(path, metadata, "architecture")
        check_architecture(path, self.architecture)
        self.rng_state = optional_object(path, metadata, "rng_state")
        if self.rng_state is not None:
            check_rng_entry(path, self.rng_state)
        self._optimizer = optional_object(path, metadata, "optimizer")
        self.optimizer_config = None
        if self._optimizer is not None:
            check_optimizer_entry(path, self._optimizer, self.architecture["layers"])
            self.optimizer_config = {key: self._optimizer[key] for key in ("class", "hyperparameters", "bitmasks")}
        self.extra = optional_object(path, metadata, "extra")
        self.tensors = tensors
        if tensors is not None:
            self._check_tensors()

    def __repr__(self):
        sizes = [self.architecture["input_size"]] + [spec["size"] for spec in self.architecture["layers"]]
        return f"Checkpoint({str(self.path)!r}, version={self.version}, sizes={sizes})"

    @property
    def dtype(self):
        return DTYPES[self.architecture["dtype"]]

    def layer_tensors(self, i):
        """{name: array} of layer ``i`` (names without the ``layers.{i}.`` prefix)."""
        self._require_tensors()
        prefix = f"layers.{i}."
        return {name[len(prefix):]: array for name, array in self.tensors.items() if name.startswith(prefix)}

    @property
    def optimizer(self):
        """The saved optimizer state in ``Optimizer.state_dict()`` form, or None when none was saved."""
        if self._optimizer is None:
            return None
        self._require_tensors()
        slots = {}
        for slot in self._optimizer["slots"]:
            prefix = f"optimizer.{slot['layer']}.{slot['kind']}."
            entry = {"keys": self.tensors[prefix + "keys"], "shape": tuple(slot["shape"])}  # load_state_dict copies
            entry.update({name: self.tensors[prefix + name] for name in slot["state"]})
            slots[(slot["layer"], slot["kind"])] = entry
        return {"class": self._optimizer["class"], "steps": self._optimizer["steps"], "slots": slots}

    # ----------------------------------------------------------------- building
    def build_model(self, comp_type=None):
        """A new :class:`Model` with the saved architecture, weights, masks and random state."""
        self._require_tensors()
        model = model_from_description(self.architecture, comp_type)
        self._check_rng(model)
        self._apply(model)
        return model

    def build_optimizer(self, model):
        """A new optimizer of the saved class and hyper-parameters for ``model``, holding the saved state."""
        if self._optimizer is None:
            raise CheckpointError(f"{self.path}: the checkpoint holds no optimizer")
        name = self._optimizer["class"]
        if name not in OPTIMIZER_CLASSES:
            raise CheckpointError(f"{self.path}: unknown optimizer class {name!r}; "
                                  f"known: {sorted(OPTIMIZER_CLASSES)}")
        if self._optimizer.get("bitmasks"):
            raise CheckpointError(f"{self.path}: the saved {name} used bitmasks, which are not stored: build it "
                                  f"with its bitmasks and pass it to load_checkpoint(..., optimizer=...)")
        try:
            optimizer = OPTIMIZER_CLASSES[name](model, **self._optimizer["hyperparameters"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{self.path}: the saved {name} hyper-parameters are not accepted: {exc}") from exc
        self._check_optimizer(optimizer)
        optimizer.load_state_dict(self.optimizer)
        return optimizer

    def load_into(self, model, optimizer=None):
        """Load the weights (and the optimizer state) into ``model``, which must have the same architecture.

        Everything is checked before anything changes, so on error the model
        and the optimizer are left as they were.
        """
        self._require_tensors()
        problem = architecture_mismatch(self.architecture, model)
        if problem:
            raise CheckpointError(f"{self.path}: the checkpoint does not fit the model: {problem}")
        if optimizer is not None:
            if optimizer.model is not model:
                raise ValueError("the optimizer must belong to the model being loaded (optimizer.model is model)")
            self._check_optimizer(optimizer)
        self._check_rng(model)
        old_layers = [layer_tensors(layer) if layer.has_parameters else None for layer in model.layers]
        old_state = None if optimizer is None else optimizer.state_dict()
        old_rng = model.rng.bit_generator.state
        try:
            self._apply(model)
            if optimizer is not None:
                optimizer.load_state_dict(self.optimizer)
        except Exception as exc:  # a safety net: the checks above should catch every misfit
            for layer, tensors in zip(model.layers, old_layers):
                if tensors is not None:
                    apply_layer_tensors(layer, tensors)
            model.rng.bit_generator.state = old_rng
            if old_state is not None:
                optimizer.load_state_dict(old_state)
            raise CheckpointError(f"{self.path}: loading failed and was undone: {exc}") from exc
        return model

    # ---------------------------------------------------------------- internals
    def _apply(self, model):
        for i, layer in enumerate(model.layers):
            apply_layer_tensors(layer, self.layer_tensors(i))
        if self._rng_fits(model):
            model.rng.bit_generator.state = self.rng_state

    def _rng_fits(self, model):
        return self.rng_state is not None and \
            self.rng_state["bit_generator"] == type(model.rng.bit_generator).__name__

    def _check_rng(self, model):
        """The saved random state must be valid for the model's bit generator (not only NumPy's)."""
        if self._rng_fits(model):
            check_rng_state(self.path, self.rng_state, type(model.rng.bit_generator))

    def _require_tensors(self):
        if self.tensors is None:
            raise RuntimeError(f"{self.path} was read with tensors=False (header only): "
                               f"use read_checkpoint(path) to read its tensors")

    def _check_tensors(self):
        arch = self.architecture
        dtype = self.dtype
        names = set(self.tensors)
        expected = set()
        for i, spec in enumerate(arch["layers"]):
            tensors = self.layer_tensors(i)
            check_layer_tensors(f"{self.path}, layer {i}", spec, tensors, dtype)
            expected |= {f"layers.{i}.{name}" for name in tensors}
        for slot in (self._optimizer or {}).get("slots", []):
            prefix = f"optimizer.{slot['layer']}.{slot['kind']}."
            where = f"{self.path}, optimizer state of layer {slot['layer']} ({slot['kind']})"
            wanted = [prefix + "keys"] + [prefix + name for name in slot["state"]]
            check_names(where, names & set(wanted), wanted)
            check_tensor(where, prefix + "keys", self.tensors[prefix + "keys"], (None,), np.int64)
            count = self.tensors[prefix + "keys"].shape[0]
            for name in wanted[1:]:
                check_tensor(where, name, self.tensors[name], (count,), dtype)
            expected |= set(wanted)
        check_names(str(self.path), names, expected)

    def _check_optimizer(self, optimizer):
        """Raise CheckpointError unless the saved optimizer state fits ``optimizer``."""
        if self._optimizer is None:
            raise CheckpointError(f"{self.path}: an optimizer was given but the checkpoint holds no optimizer state")
        if self._optimizer["class"] != type(optimizer).__name__:
            raise CheckpointError(f"{self.path}: the checkpoint holds the state of a {self._optimizer['class']}, "
                                  f"the optimizer given is a {type(optimizer).__name__}")
        names = sorted(optimizer._state_names())
        for slot in self._optimizer["slots"]:
            if sorted(slot["state"]) != names:
                raise CheckpointError(f"{self.path}: the optimizer state of layer {slot['layer']} ({slot['kind']}) "
                                      f"holds {sorted(slot['state'])}, the optimizer given keeps {names}")


# ------------------------------------------------------------------------ public API
def save_checkpoint(path, model, optimizer=None, extra=None):
    """Write ``model`` (and ``optimizer``'s state, and the JSON-serialisable ``extra`` dict) to ``path``.

    The write is atomic. Returns the path. See the module docstring for the format.
    """
    if optimizer is not None and optimizer.model is not model:
        raise ValueError("the optimizer must belong to the model being saved (optimizer.model is model)")
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict (or None), got {type(extra).__name__}")
    tensors = {}
    for i, layer in enumerate(model.layers):
        tensors.update({f"layers.{i}.{name}": array for name, array in layer_tensors(layer).items()})
    metadata = {"format": FORMAT, "format_version": str(VERSIONS[FORMAT]),
                "architecture": to_json(describe_model(model), "the architecture"),
                "rng_state": to_json(model.rng.bit_generator.state, "the random state")}
    if optimizer is not None:
        state = optimizer.state_dict()
        slot_tensors, slots = optimizer_tensors(state)
        tensors.update(slot_tensors)
        entry = dict(optimizer_config(optimizer), steps=int(state["steps"]), slots=slots)
        metadata["optimizer"] = to_json(entry, "the optimizer's hyper-parameters")
    if extra is not None:
        metadata["extra"] = to_json(extra, "extra")
    return write_safetensors(path, tensors, metadata)


def read_checkpoint(path, tensors=True):
    """Read and check a checkpoint file; ``tensors=False`` reads only its header (architecture, extra).

    Raises :class:`CheckpointError` for a damaged, foreign or other-version file.
    """
    metadata, arrays = read_safetensors(path, FORMAT, tensors)
    return Checkpoint(path, metadata, arrays)


def load_checkpoint(path, model=None, optimizer=None, comp_type=None):
    """Load a checkpoint: into ``model`` (checked to have the same architecture) or into a new model.

    With ``model=None`` a new :class:`Model` is built on ``comp_type`` (or the
    optimizer's model is used when an optimizer is given). The optimizer's
    state is loaded when ``optimizer`` is given. On any error nothing changes.
    Returns the model.
    """
    if optimizer is not None:
        if model is None:
            model = optimizer.model
        elif optimizer.model is not model:
            raise ValueError("the optimizer must belong to the model being loaded (optimizer.model is model)")
    checkpoint = read_checkpoint(path)
    if model is None:
        return checkpoint.build_model(comp_type)
    if comp_type is not None and str(comp_type).upper() != model.comp_type:
        raise ValueError(f"comp_type={comp_type!r} only applies when a new model is built; the model given "
                         f"is on {model.comp_type} (use model.convert_comp_type)")
    return checkpoint.load_into(model, optimizer)
