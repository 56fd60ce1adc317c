"""Sparana's files on disk: safetensors (a JSON header, then raw little-endian tensors), read with
its NumPy API, so reading a file never runs code; every write is atomic (:mod:`._atomic`).

Each kind of file names its ``format`` and ``format_version`` in the header's metadata; a reader
accepts exactly the versions it knows, and says which reader a file of another known format
needs. The checks here are those of any file (format, version, JSON entries, tensor names, shapes
and dtypes); what a checkpoint's header must hold is checked by :mod:`._header`.
"""

from __future__ import annotations

import json
import os

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save as _serialize

from ._atomic import atomic_write
from ._results import json_default

FORMAT = "sparana.checkpoint"
SPARSE_PARAMETERS_FORMAT = "sparana.sparse_parameters"
# The version each reader supports, and the function that reads each format.
VERSIONS = {FORMAT: 1, SPARSE_PARAMETERS_FORMAT: 1}
READERS = {FORMAT: "load_checkpoint / read_checkpoint", SPARSE_PARAMETERS_FORMAT: "ModelSaver.load_sparse_parameters"}


class CheckpointError(ValueError):
    """A file is cut short, not a Sparana file, of another version, or does not fit the model."""


def write_safetensors(path, tensors, metadata):
    """Write host ``tensors`` and string ``metadata`` to ``path`` atomically (see sparana.io._atomic)."""
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
        return json.dumps(value, default=json_default, allow_nan=True)
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
