"""Checkpoint files: a model (and optionally its optimizer) in a versioned safetensors file.

A checkpoint is a safetensors file (an 8-byte header length, a JSON header,
then raw little-endian tensor bytes) written and read with the safetensors
NumPy API. Reading it never executes code: there is no pickle anywhere.

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
  "shape": [n_in, n_out], "state": [state names]}]}``. Bitmask arrays are not stored.
* ``extra`` (JSON, only when given): the caller's dict (experiment name, round, seeds...).

:func:`read_checkpoint` with ``tensors=False`` reads only the header, so the
architecture and ``extra`` are cheap to get. Readers accept exactly the
versions they know; any change to tensor names or meanings bumps the version.
Loading into an existing model requires the same architecture (every field
but ``seed``) and checks the whole file before anything changes; the random
state is restored when the model's bit generator is of the saved kind (PCG64
unless the caller passed another Generator). Files are written atomically (a temporary file in the same folder, flushed
and fsynced, then ``os.replace``), so the target name never holds half a file.
"""

from __future__ import annotations

import contextlib
import json
import numbers
import os
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse
from safetensors import safe_open
from safetensors.numpy import save as _serialize

from ._backend import DTYPES, to_host
from ._layers import ACTIVATIONS, DENSE_LAYERS, DROPOUT_STYLES
from ._model import Model
from ._optimizers import AdadadOptimizer, AdamOptimizer, MadadadOptimizer, SGDOptimizer
from ._results import _plain
from ._sparse_layers import SPARSE_LAYERS
from .kernels import SparsePattern

FORMAT = "sparana.checkpoint"
SPARSE_PARAMETERS_FORMAT = "sparana.sparse_parameters"
# The version each reader supports, and the function that reads each format.
VERSIONS = {FORMAT: 1, SPARSE_PARAMETERS_FORMAT: 1}
READERS = {FORMAT: "load_checkpoint / read_checkpoint", SPARSE_PARAMETERS_FORMAT: "ModelSaver.load_sparse_parameters"}

LAYER_CLASSES = {"dense": DENSE_LAYERS, "sparse": SPARSE_LAYERS}
OPTIMIZER_CLASSES = {cls.__name__: cls for cls in (SGDOptimizer, AdamOptimizer, MadadadOptimizer, AdadadOptimizer)}
# Optimizer attributes that are constructor arguments of the same name, where the class has them.
_OPTIONAL_HYPERPARAMETERS = ("momentum", "beta1", "beta2", "epsilon", "friction")


class CheckpointError(ValueError):
    """A file is cut short, not a Sparana file, of another version, or does not fit the model."""


# ------------------------------------------------------------------------------- files
def write_safetensors(path, tensors, metadata):
    """Write host ``tensors`` and string ``metadata`` to ``path`` atomically."""
    path = Path(path)
    data = _serialize({name: np.ascontiguousarray(array) for name, array in tensors.items()}, metadata)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (not possible everywhere)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return path


def read_safetensors(path, expected_format, tensors=True):
    """(metadata, {name: array} or None) of a file of ``expected_format`` in the supported version."""
    try:
        with safe_open(os.fspath(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
            check_format(path, metadata, expected_format)
            arrays = {name: handle.get_tensor(name) for name in handle.keys()} if tensors else None
    except (CheckpointError, OSError):
        raise
    except Exception as exc:  # safetensors' errors: a damaged, cut-short or foreign file
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc}); it may be cut short, "
                              f"damaged, or not a {expected_format} file at all") from exc
    return metadata, arrays


def check_format(path, metadata, expected_format):
    """Raise CheckpointError unless the header names ``expected_format`` in the supported version."""
    found = metadata.get("format")
    if found != expected_format:
        hint = f" (read it with {READERS[found]})" if found in READERS else ""
        what = "no 'format' entry in its header" if found is None else f"format {found!r}"
        raise CheckpointError(f"{path}: a {expected_format!r} file expected, got a safetensors file with "
                              f"{what}{hint}")
    version = metadata.get("format_version")
    supported = VERSIONS[expected_format]
    if version != str(supported):
        raise CheckpointError(f"{path}: {expected_format} format version {version!r} is not supported; "
                              f"this Sparana reads version {supported}")


def header_json(path, metadata, key, required=True):
    """The JSON value of header entry ``key`` (None when absent and not required)."""
    if key not in metadata:
        if required:
            raise CheckpointError(f"{path}: the header has no {key!r} entry")
        return None
    try:
        return json.loads(metadata[key])
    except ValueError as exc:
        raise CheckpointError(f"{path}: the header entry {key!r} is not valid JSON ({exc})") from exc


def to_json(value, what):
    """JSON text of ``value`` (NumPy scalars and arrays become numbers and lists)."""
    try:
        return json.dumps(value, default=_plain, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON-serialisable (dicts, lists, str, numbers, None): {exc}") from exc


def check_tensor(where, name, array, shape, dtype):
    """Raise CheckpointError unless ``array`` has ``shape`` (None entries: any) and ``dtype``."""
    given = tuple(array.shape)
    ok = len(given) == len(shape) and all(s is None or s == g for s, g in zip(shape, given))
    if not ok or array.dtype != np.dtype(dtype):
        expected = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise CheckpointError(f"{where}: tensor {name!r} of shape {expected} and dtype {np.dtype(dtype).name} "
                              f"expected, got shape {given} and dtype {array.dtype.name}")


def check_names(where, names, required, optional=()):
    """Raise CheckpointError for missing required tensors or tensors this format does not define."""
    missing = sorted(set(required) - set(names))
    if missing:
        raise CheckpointError(f"{where}: missing tensor(s) {missing}")
    unknown = sorted(set(names) - set(required) - set(optional))
    if unknown:
        raise CheckpointError(f"{where}: unexpected tensor(s) {unknown} (not part of this format)")


# ------------------------------------------------------------------------- layers
def layer_spec(layer):
    """A layer's architecture entry (JSON-ready)."""
    own = layer._own_dropout
    return {"kind": "sparse" if layer.is_sparse else "dense", "activation": layer.activation,
            "size": int(layer.size), "input_size": int(layer.input_size),
            "dropout": None if own is None else float(own)}


def describe_model(model):
    """The model's architecture entry (JSON-ready); see the module docstring."""
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
    tensors = {"biases": np.array(to_host(layer.biases))}
    if layer.is_sparse:
        matrix = layer.to_scipy()
        tensors.update(data=np.array(matrix.data), indices=matrix.indices.astype(np.int64),
                       indptr=matrix.indptr.astype(np.int64))
    else:
        tensors["weights"] = np.array(to_host(layer.weights))
        if layer.prune_mask is not None:
            tensors["prune_mask"] = np.array(to_host(layer.prune_mask))
    if layer.training_mask is not None:
        tensors["training_mask"] = np.array(to_host(layer.training_mask))
    return tensors


def apply_layer_tensors(layer, tensors):
    """Set a layer's parameters and masks to copies of ``tensors`` (as :func:`layer_tensors` gives)."""
    biases = np.array(tensors["biases"])
    if layer.is_sparse:
        matrix = scipy.sparse.csr_matrix((tensors["data"], tensors["indices"], tensors["indptr"]),
                                         shape=(layer.size, layer.input_size))
        layer.set_parameters(matrix, biases)  # copies; the canonical CSR keeps its entry order
    else:
        layer.prune_mask = None  # or set_parameters would apply the old mask to the new weights
        layer.set_parameters(np.array(tensors["weights"]), biases)
        if "prune_mask" in tensors:
            layer.prune_mask = np.array(tensors["prune_mask"])
    mask = tensors.get("training_mask")
    layer.training_mask = None if mask is None else np.array(mask)


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


def _check_architecture(path, arch):
    """Raise CheckpointError unless the architecture entry is well formed."""
    def fail(what):
        raise CheckpointError(f"{path}: malformed architecture in the header: {what}")

    def positive_int(value):
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    if not isinstance(arch, dict) or not isinstance(arch.get("layers"), list) or not arch["layers"]:
        fail("a dict with a non-empty 'layers' list expected")
    if not positive_int(arch.get("input_size")):
        fail(f"input_size must be a positive integer, got {arch.get('input_size')!r}")
    if arch.get("dtype") not in DTYPES:
        fail(f"dtype must be one of {tuple(DTYPES)}, got {arch.get('dtype')!r}")
    if arch.get("dropout_style") not in DROPOUT_STYLES:
        fail(f"dropout_style must be one of {DROPOUT_STYLES}, got {arch.get('dropout_style')!r}")
    previous = arch["input_size"]
    for i, spec in enumerate(arch["layers"]):
        if not isinstance(spec, dict) or spec.get("kind") not in LAYER_CLASSES or \
                spec.get("activation") not in ACTIVATIONS:
            fail(f"layer {i} must have kind in {tuple(LAYER_CLASSES)} and activation in {ACTIVATIONS}, got {spec!r}")
        if not positive_int(spec.get("size")) or spec.get("input_size") != previous:
            fail(f"layer {i} must have a positive size and input_size {previous}, got {spec!r}")
        previous = spec["size"]


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


# ---------------------------------------------------------------------- optimizers
def optimizer_config(optimizer):
    """The optimizer's class and constructor arguments (JSON-ready); bitmasks are only flagged."""
    hyper = {"learning_rate": optimizer.learning_rate, "l1_constant": optimizer.l1, "l2_constant": optimizer.l2,
             "loss": optimizer.loss, "regularization": optimizer.regularization,
             "clip": optimizer.clip or None, "backward_layers": optimizer.backward_layers,
             "selected": optimizer.selected, "train_final_layer": optimizer.train_final_layer,
             "train_biases": optimizer.train_biases}
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
        _check_architecture(path, self.architecture)
        self.extra = header_json(path, metadata, "extra", required=False)
        self.rng_state = header_json(path, metadata, "rng_state", required=False)
        self._optimizer = header_json(path, metadata, "optimizer", required=False)
        self.optimizer_config = None
        if self._optimizer is not None:
            self._check_optimizer_header()
            self.optimizer_config = {key: self._optimizer[key] for key in ("class", "hyperparameters", "bitmasks")}
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
            entry = {"keys": np.array(self.tensors[prefix + "keys"]), "shape": tuple(slot["shape"])}
            entry.update({name: np.array(self.tensors[prefix + name]) for name in slot["state"]})
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
        return isinstance(self.rng_state, dict) and \
            self.rng_state.get("bit_generator") == type(model.rng.bit_generator).__name__

    def _check_rng(self, model):
        """The saved random state must be valid for the model's bit generator (tried on a scratch one)."""
        if self._rng_fits(model):
            try:
                type(model.rng.bit_generator)().state = self.rng_state
            except (TypeError, ValueError, KeyError) as exc:
                raise CheckpointError(f"{self.path}: invalid rng_state in the header ({exc})") from exc

    def _require_tensors(self):
        if self.tensors is None:
            raise RuntimeError(f"{self.path} was read with tensors=False (header only): "
                               f"use read_checkpoint(path) to read its tensors")

    def _check_optimizer_header(self):
        opt, layers = self._optimizer, self.architecture["layers"]
        ok = isinstance(opt, dict) and isinstance(opt.get("class"), str) and isinstance(opt.get("steps"), int) \
            and isinstance(opt.get("hyperparameters"), dict) and isinstance(opt.get("slots"), list)
        for slot in opt["slots"] if ok else []:
            ok = isinstance(slot, dict) and isinstance(slot.get("layer"), int) and 0 <= slot["layer"] < len(layers) \
                and slot.get("kind") in ("weights", "biases") and isinstance(slot.get("state"), list)
            if not ok:
                break
            spec = layers[slot["layer"]]
            if slot.get("shape") != [spec["input_size"], spec["size"]]:
                raise CheckpointError(f"{self.path}: the optimizer state of layer {slot['layer']} ({slot['kind']}) "
                                      f"is for shape {slot.get('shape')}, the architecture's layer is "
                                      f"[{spec['input_size']}, {spec['size']}]")
        if not ok:
            raise CheckpointError(f"{self.path}: malformed optimizer entry in the header: {opt!r:.300}")

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
