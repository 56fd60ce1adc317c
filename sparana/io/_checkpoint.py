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
  "shape": [n_in, n_out], "state": [state names]}]}``. Bitmask arrays are not stored. The
  hyper-parameters' values are checked by the optimizer's constructor when
  ``build_optimizer`` uses them; an optimizer given to ``load_into`` keeps its own.
* ``extra`` (JSON, only when given): the caller's dict (experiment name, round, seeds...).

:func:`read_checkpoint` with ``tensors=False`` reads only the header, so the
architecture and ``extra`` are cheap to get. Every header field is checked when
the file is read (a missing key, a wrong type, a value out of range, an unknown
key: a :class:`CheckpointError` that names the field), so nothing is built or
loaded from a malformed header. Readers accept exactly the
versions they know; any change to tensor names or meanings bumps the version.
Loading into an existing model requires the same architecture (every field
but ``seed``) and checks the whole file before anything changes; the random
state is restored when the model's bit generator is of the saved kind (PCG64
unless the caller passed another Generator). Files are written atomically
(:mod:`sparana._atomic`: a temporary file in the same folder, flushed and
fsynced, then ``os.replace``), so the target name never holds half a file, and
with the mode of the user's umask.
"""

from __future__ import annotations

import json
import numbers
import os

import numpy as np
import scipy.sparse
from safetensors import safe_open
from safetensors.numpy import save as _serialize

from ._atomic import atomic_write
from .._backend import DTYPES, to_host
from .._checks import check_dropout
from ..nn._activations import NAMES as ACTIVATIONS
from ..nn._dense import DENSE_LAYERS
from ..nn._layer import DROPOUT_STYLES
from ..nn._model import Model
from ..nn._optimizers import AdadadOptimizer, AdamOptimizer, MadadadOptimizer, SGDOptimizer
from ._results import _plain
from ..nn._sparse import SPARSE_LAYERS
from ..kernels import SparsePattern

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
    """Write host ``tensors`` and string ``metadata`` to ``path`` atomically (see sparana._atomic)."""
    data = _serialize({name: np.ascontiguousarray(array) for name, array in tensors.items()}, metadata)
    return atomic_write(path, lambda handle: handle.write(data))


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


# ------------------------------------------------------------------- header checks
# Each header entry is checked field by field before anything is built or loaded: a field is
# (what is expected, in words; a test of the value). A failure names the field, e.g.
# "architecture.layers[1].dropout must be null or a number in [0, 1), got -0.5".

def is_integer(value, low=1):
    """True for an int (not a bool) of at least ``low``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _one_of(choices):
    return f"one of {list(choices)}", lambda value: isinstance(value, str) and value in choices


def _accepted_by(check):
    """A test that passes when ``check(value)`` raises nothing."""
    def test(value):
        try:
            check(value)
        except (TypeError, ValueError):
            return False
        return True
    return test


_DROPOUT = ("null or a number in [0, 1)", _accepted_by(check_dropout))
_SCALARS = (type(None), bool, int, float, str)


def _show(value):
    text = json.dumps(value) if isinstance(value, (dict, list, str, int, float, bool, type(None))) else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def check_fields(path, where, entry, fields):
    """Raise CheckpointError unless ``entry`` is a JSON object with exactly the keys of ``fields``,
    each value passing its test; ``fields`` maps a key to (what is expected, test)."""
    if not isinstance(entry, dict):
        raise CheckpointError(f"{path}: malformed header: {where} must be a JSON object, got {_show(entry)}")
    for key, (expected, test) in fields.items():
        if key not in entry:
            raise CheckpointError(f"{path}: malformed header: {where}.{key} is missing ({expected} expected)")
        if not test(entry[key]):
            raise CheckpointError(f"{path}: malformed header: {where}.{key} must be {expected}, "
                                  f"got {_show(entry[key])}")
    unknown = sorted(set(entry) - set(fields))
    if unknown:
        raise CheckpointError(f"{path}: malformed header: {where} has unexpected key(s) {unknown} "
                              f"(expected only {list(fields)})")


def _check_architecture(path, arch):
    """Raise CheckpointError unless the architecture entry is well formed (see the module docstring)."""
    check_fields(path, "architecture", arch, {
        "input_size": ("a positive integer", is_integer),
        "dtype": _one_of(DTYPES),
        "dropout": _DROPOUT,
        "dropout_style": _one_of(DROPOUT_STYLES),
        "seed": ("null or a non-negative integer", lambda v: v is None or is_integer(v, 0)),
        "layers": ("a non-empty list of layer entries", lambda v: isinstance(v, list) and len(v) > 0)})
    previous = arch["input_size"]
    for i, spec in enumerate(arch["layers"]):
        check_fields(path, f"architecture.layers[{i}]", spec, {
            "kind": _one_of(LAYER_CLASSES),
            "activation": _one_of(ACTIVATIONS),
            "size": ("a positive integer", is_integer),
            "input_size": (f"{previous} (the size of what comes before)",
                           lambda v, n=previous: is_integer(v) and v == n),
            "dropout": _DROPOUT})
        previous = spec["size"]


def _check_optimizer_entry(path, opt, layers):
    """Raise CheckpointError unless the optimizer entry is well formed and its slots fit ``layers``."""
    check_fields(path, "optimizer", opt, {
        "class": ("an optimizer class name", lambda v: isinstance(v, str) and len(v) > 0),
        "hyperparameters": ("an object of constructor arguments (null, booleans, numbers or strings)",
                            lambda v: isinstance(v, dict) and all(isinstance(x, _SCALARS) for x in v.values())),
        "bitmasks": ("true or false", lambda v: isinstance(v, bool)),
        "steps": ("a non-negative integer", lambda v: is_integer(v, 0)),
        "slots": ("a list of slot entries", lambda v: isinstance(v, list))})
    seen = set()
    for k, slot in enumerate(opt["slots"]):
        where = f"optimizer.slots[{k}]"
        check_fields(path, where, slot, {
            "layer": (f"a layer index in [0, {len(layers)})", lambda v: is_integer(v, 0) and v < len(layers)),
            "kind": _one_of(("weights", "biases")),
            "shape": ("the layer's [n_in, n_out]", lambda v: isinstance(v, list)),
            "state": ("a list of distinct state names", lambda v: isinstance(v, list) and all(
                isinstance(n, str) and n not in ("", "keys", "shape") for n in v) and len(set(v)) == len(v))})
        spec = layers[slot["layer"]]
        shape = [spec["input_size"], spec["size"]]
        if slot["shape"] != shape:
            raise CheckpointError(f"{path}: malformed header: {where}.shape must be {shape} (layer "
                                  f"{slot['layer']}'s [n_in, n_out]), got {_show(slot['shape'])}")
        if (slot["layer"], slot["kind"]) in seen:
            raise CheckpointError(f"{path}: malformed header: {where} is a second state for layer "
                                  f"{slot['layer']} ({slot['kind']})")
        seen.add((slot["layer"], slot["kind"]))


def check_rng_state(path, state, bit_generator):
    """Raise CheckpointError unless ``state`` is a valid state of the ``bit_generator`` class (tried on a
    scratch one)."""
    try:
        bit_generator().state = state
    except Exception as exc:  # the bit generators raise TypeError, ValueError, KeyError, OverflowError...
        raise CheckpointError(f"{path}: malformed header: rng_state is not a valid {bit_generator.__name__} "
                              f"state ({type(exc).__name__}: {exc})") from exc


def _check_rng_entry(path, state):
    """The random state must name its bit generator; a NumPy one's state is checked here already."""
    if not isinstance(state, dict) or not isinstance(state.get("bit_generator"), str):
        raise CheckpointError(f"{path}: malformed header: rng_state must be a JSON object naming its "
                              f"'bit_generator' (a NumPy bit generator's state), got {_show(state)}")
    bit_generator = getattr(np.random, state["bit_generator"], None)
    if isinstance(bit_generator, type) and issubclass(bit_generator, np.random.BitGenerator):
        check_rng_state(path, state, bit_generator)


def optional_object(path, metadata, key):
    """The JSON object of header entry ``key``, or None when the entry is absent."""
    value = header_json(path, metadata, key, required=False)
    if key in metadata and not isinstance(value, dict):
        raise CheckpointError(f"{path}: malformed header: {key} must be a JSON object (or absent), got {_show(value)}")
    return value


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
        _check_architecture(path, self.architecture)
        self.rng_state = optional_object(path, metadata, "rng_state")
        if self.rng_state is not None:
            _check_rng_entry(path, self.rng_state)
        self._optimizer = optional_object(path, metadata, "optimizer")
        self.optimizer_config = None
        if self._optimizer is not None:
            _check_optimizer_entry(path, self._optimizer, self.architecture["layers"])
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
