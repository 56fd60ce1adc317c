"""Reading a batch: inputs as a feature-major array on the model's device, labels as one-hot targets.

Users give batch-major data, (batch, features), as NumPy or CuPy arrays or anything array-like;
labels are integer class ids or one-hot rows. Everything is checked here, once, with errors that
say which shape or values were expected.
"""

from __future__ import annotations

import numpy as np


def feature_major(backend, inputs, input_size):
    """Inputs (batch, input_size), or one row, as a checked (input_size, batch) array of the model's float type."""
    x = backend.asarray(inputs)
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2 or x.shape[1] != input_size:
        raise ValueError(f"inputs of shape (batch, {input_size}) expected, got {tuple(x.shape)}")
    if x.dtype.kind not in "fiub":
        raise TypeError(f"numeric inputs expected, got dtype {x.dtype}")
    x = x.astype(backend.dtype, copy=False)
    xp = backend.xp
    if x.dtype.kind == "f" and not bool(xp.isfinite(x.sum())) and not bool(xp.isfinite(x).all()):
        bad = int((~xp.isfinite(x)).sum())
        raise ValueError(f"inputs must be finite, got {bad} NaN or infinite value(s)")
    return x.T


def targets(backend, labels, batch, classes):
    """One-hot (or given one-hot) targets as a feature-major (classes, batch) array on the device."""
    y = backend.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.ndim == 1:
        return _one_hot(backend, _class_ids(backend, y, batch, classes), batch, classes)
    if y.ndim != 2 or y.shape != (batch, classes):
        raise ValueError(f"labels of shape ({batch},) or one-hot ({batch}, {classes}) expected, got {tuple(y.shape)}")
    y = y.astype(backend.dtype, copy=False)
    if not bool(backend.xp.isfinite(y).all()):
        raise ValueError("labels must be finite, got NaN or infinite values")
    return y.T


def _class_ids(backend, y, batch, classes):
    if y.shape[0] != batch:
        raise ValueError(f"{batch} labels expected (one per input row), got {y.shape[0]}")
    if y.dtype.kind == "f":
        if not bool((y == backend.xp.round(y)).all()):
            raise ValueError("integer class ids (or one-hot rows) expected as labels, got non-integer floats")
    elif y.dtype.kind not in "iu":
        raise TypeError(f"labels must be integer class ids or one-hot rows, got dtype {y.dtype}")
    if batch and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise ValueError(f"class ids in [0, {classes}) expected, got values in [{int(y.min())}, {int(y.max())}]")
    return y.astype(np.int64)


def _one_hot(backend, ids, batch, classes):
    onehot = backend.zeros((classes, batch))
    onehot[ids, backend.xp.arange(batch)] = 1
    return onehot
