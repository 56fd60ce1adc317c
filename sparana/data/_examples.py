"""Checking loader inputs: sample arrays, class labels, and their conversions."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ._arrow import to_float


def as_samples(data, name: str) -> np.ndarray:
    """``data`` as an (N, features) array without copying (unless it must be flattened).

    Accepts uint8 images or floating-point data with at least two dimensions; trailing
    dimensions are flattened.  Floating data must be finite.
    """
    data = np.asarray(data)
    if data.dtype != np.uint8 and not np.issubdtype(data.dtype, np.floating):
        raise TypeError(f"{name}: expected uint8 images or floating-point data, "
                        f"got dtype {data.dtype}")
    if data.ndim < 2:
        raise ValueError(f"{name}: expected an array of shape (N, features...), "
                         f"got shape {data.shape}")
    data = data.reshape(data.shape[0], int(np.prod(data.shape[1:])))
    if data.dtype != np.uint8:
        bad = ~np.isfinite(data).all(axis=1)
        if bad.any():
            raise ValueError(f"{name}: expected finite values, found NaN or infinity in "
                             f"{int(bad.sum())} rows (first: row {int(np.argmax(bad))})")
    return data


def batch_converter(data: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """How a batch of ``data`` is returned: uint8 -> float32 / 255; float64 kept; else float32."""
    if data.dtype == np.uint8:
        return to_float
    if data.dtype == np.float64:
        return lambda batch: batch
    return lambda batch: batch.astype(np.float32, copy=False)


def class_ids(labels, name: str, num_samples: int, data_name: str) -> tuple[np.ndarray, int | None]:
    """Integer class ids of ``labels`` (ids or one-hot rows), and the one-hot width if any."""
    labels = np.asarray(labels)
    if labels.ndim == 0 or len(labels) != num_samples:
        raise ValueError(f"{name} holds {labels.shape[0] if labels.ndim else 'no'} labels but "
                         f"{data_name} holds {num_samples} samples")
    if labels.ndim == 1:
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"{name}: expected integer class ids or one-hot rows, "
                            f"got 1-D labels of dtype {labels.dtype}")
        if labels.size and labels.min() < 0:
            raise ValueError(f"{name}: expected class ids >= 0, found {int(labels.min())}")
        return labels, None
    if labels.ndim == 2:
        bad = ~(((labels == 0) | (labels == 1)).all(axis=1) & (labels.sum(axis=1) == 1))
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(f"{name}: expected one-hot rows (one 1, the rest 0), "
                             f"row {row} is {labels[row].tolist()}")
        return labels.argmax(axis=1), labels.shape[1]
    raise ValueError(f"{name}: expected class ids (N,) or one-hot rows (N, C), "
                     f"got shape {labels.shape}")


def resolve_num_classes(num_classes, *labelled: tuple[np.ndarray, int | None, str]) -> int:
    """The number of classes: given, else the one-hot width, else the largest id + 1."""
    widths = {width for _, width, _ in labelled if width is not None}
    if len(widths) > 1:
        raise ValueError("one-hot label widths differ: "
                         + ", ".join(f"{n} has {w}" for _, w, n in labelled if w is not None))
    if num_classes is None:
        num_classes = widths.pop() if widths else 1 + max(
            (int(ids.max()) for ids, _, _ in labelled if ids.size), default=0)
    elif isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    for ids, width, name in labelled:
        if width is not None and width != num_classes:
            raise ValueError(f"{name}: one-hot rows are {width} wide "
                             f"but num_classes is {num_classes}")
        if ids.size and ids.max() >= num_classes:
            raise ValueError(f"{name}: expected class ids 0..{num_classes - 1}, "
                             f"found {int(ids.max())}")
    return int(num_classes)
