"""Losses and their gradients with respect to the head's pre-activation.

``'cross_entropy'`` (alias ``'CE'``, the default): softmax cross-entropy. With a linear head the
softmax is applied inside the loss; with a softmax head the head's outputs are the probabilities.
Either way the gradient with respect to the logits is p - y per sample, computed without dividing
by p.

``'quadratic'`` (alias ``'MSE'``): 0.5 * (y_hat - y)^2 summed over the classes, back-propagated
through the head's activation.

``reduction`` says how the per-sample losses are combined: ``'mean'`` over the batch or ``'sum'``.
``None`` (the default) takes each loss's usual one: ``'mean'`` for cross-entropy, ``'sum'`` for the
quadratic loss.
"""

from __future__ import annotations

from .._backend import is_device_array
from ..kernels import generic
from ._activations import activation as as_activation

LOSSES = ("cross_entropy", "quadratic")
REDUCTIONS = ("mean", "sum")
DEFAULT_REDUCTIONS = {"cross_entropy": "mean", "quadratic": "sum"}
_ALIASES = {"cross_entropy": "cross_entropy", "ce": "cross_entropy", "quadratic": "quadratic", "mse": "quadratic"}


def resolve_loss(name):
    """The canonical loss name for ``name`` (case-insensitive aliases accepted)."""
    key = name.lower() if isinstance(name, str) else None
    if key not in _ALIASES:
        raise ValueError(f"loss must be one of {LOSSES} (or 'CE', 'MSE'), got {name!r}")
    return _ALIASES[key]


def resolve_reduction(loss, reduction):
    """'mean' or 'sum': ``reduction`` checked, or the usual one of the (canonical) ``loss`` when None."""
    if reduction is None:
        return DEFAULT_REDUCTIONS[loss]
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS} or None (the loss's usual one), got {reduction!r}")
    return reduction


def loss_and_gradient(loss, activation, outputs, targets, reduction=None):
    """Return (loss value, dL/dz) of ``loss`` for a head with ``activation`` (a name or an activation object).

    ``outputs`` are the head's outputs (classes, batch), feature-major; ``targets`` the target
    matrix of the same shape (one-hot rows of the labels, transposed). ``reduction``: 'mean',
    'sum' or None (the loss's usual one). The value is a float, or on the GPU a 0-d CuPy array (so
    that a training step does not wait for the device; ``float(value)`` reads it).
    """
    loss, act = resolve_loss(loss), as_activation(activation)
    divisor = outputs.shape[1] if resolve_reduction(loss, reduction) == "mean" else 1
    if loss == "cross_entropy":
        log_p, grad = act.cross_entropy(outputs, targets)
        value = -_scalar((targets * log_p).sum()) / divisor
    else:
        difference = outputs - targets
        value = 0.5 * _scalar((difference * difference).sum()) / divisor
        grad = act.backward(difference, outputs, generic)  # array-module code: NumPy or CuPy
    if divisor != 1:
        grad *= outputs.dtype.type(1.0 / divisor)
    return value, grad


def _scalar(total):
    """A float for a NumPy result; a CuPy result stays a 0-d array on the device."""
    return total if is_device_array(total) else float(total)
