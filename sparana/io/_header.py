"""Checking a checkpoint's header, field by field, before anything is built or loaded from it.

A field is checked by (what is expected, in words; a test of the value). A failure raises a
:class:`CheckpointError` that names the field, e.g. "architecture.layers[1].dropout must be
null or a number in [0, 1), got -0.5"; an unknown key is refused as well.
"""

from __future__ import annotations

import json

import numpy as np

from .._backend import DTYPES
from .._checks import check_dropout, is_integer
from ..nn._activations import NAMES as ACTIVATIONS
from ..nn._layer import DROPOUT_STYLES
from ._description import LAYER_CLASSES
from ._safetensors import CheckpointError, header_json


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


POSITIVE_INTEGER = ("a positive integer", lambda value: is_integer(value, 1))
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


def check_architecture(path, arch):
    """Raise CheckpointError unless the architecture entry is well formed (the format is in :mod:`._checkpoint`)."""
    check_fields(path, "architecture", arch, {
        "input_size": POSITIVE_INTEGER,
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
            "size": POSITIVE_INTEGER,
            "input_size": (f"{previous} (the size of what comes before)",
                           lambda v, n=previous: is_integer(v, 1) and v == n),
            "dropout": _DROPOUT})
        previous = spec["size"]


def check_optimizer_entry(path, opt, layers):
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


def check_rng_entry(path, state):
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
