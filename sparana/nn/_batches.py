"""Reading a batch: inputs as a feature-major array on the model's device, labels as one-hot targets.

Users give batch-major data, (batch, features), as NumPy or CuPy arrays or anything array-like;
labels are integer class ids or one-hot rows. Everything is checked here, once, with errors that
say which shape or values were expected. Values (finite inputs, class ids in range) are checked on
the host, before the data go to the device: data that are already on the GPU get their shapes and
types checked only, since reading their values back would make every step wait for the device.
"""

from __future__ import annotations

import numpy as np

from .._backend import is_device_array


def _on_host(array):
    """``array`` as a NumPy array when it is host data (checked there), else None (device data)."""
    return None if is_device_array(array) else np.asarray(array)


def feature_major(backend, inputs, input_size):
    """Inputs (batch, input_size), or one row, as a checked (input_size, batch) array of the model's float type."""
    host = _on_host(inputs)
    x = inputs if host is None else host
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2 or x.shape[1] != input_size:
        raise ValueError(f"inputs of shape (batch, {input_size}) expected, got {tuple(x.shape)}")
    if x.dtype.kind not in "fiub":
        raise TypeError(f"numeric inputs expected, got dtype {x.dtype}")
    if host is not None and x.dtype.kind == "f" and not np.isfinite(x.sum()) and not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise ValueError(f"inputs must be finite, got {bad} NaN or infinite value(s)")
    return backend.asarray(x, dtype=backend.dtype).T


def targets(backend, labels, batch, classes):
    """One-hot (or given one-hot) targets as a feature-major (classes, batch) array on the device."""
    host = _on_host(labels)
    y = labels if host is None else host
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.ndim == 1:
        return _one_hot(backend, _class_ids(backend, y, batch, classes, host is not None), batch, classes)
    if y.ndim != 2 or y.shape != (batch, classes):
        raise ValueError(f"labels of shape ({batch},) or one-hot ({batch}, {classes}) expected, got {tuple(y.shape)}")
    if host is not None and not np.isfinite(y).all():
        raise ValueError("labels must be finite, got NaN or infinite values")
    return backend.asarray(y, dtype=backend.dtype).T


def _class_ids(backend, y, batch, classes, check_values=True):
    if y.shape[0] != batch:
        raise ValueError(f"{batch} labels expected (one per input row), got {y.shape[0]}")
    if y.dtype.kind not in "fiu":
        raise TypeError(f"labels must be integer class ids or one-hot rows, got dtype {y.dtype}")
    if check_values:
        if y.dtype.kind == "f" and not (y == np.round(y)).all():
            raise ValueError("integer class ids (or one-hot rows) expected as labels, got non-integer floats")
        if batch and (int(y.min()) < 0 or int(y.max()) >= classes):
            raise ValueError(f"class ids in [0, {classes}) expected, got values in [{int(y.min())}, {int(y.max())}]")
    return backend.asarray(y, dtype=np.int64)


def _one_hot(backend, ids, batch, classes):
    onehot = backend.zeros((classes, batch))
    onehot[ids, backend.xp.arange(batch)] = 1
    return onehot
