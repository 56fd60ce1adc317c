"""Losses and their gradients with respect to the head's pre-activation.

``'cross_entropy'`` (alias ``'CE'``, the default): softmax cross-entropy averaged
over the batch. With a linear head the softmax is applied inside the loss; with
a softmax head the head's outputs are the probabilities. Either way the
gradient with respect to the logits is (p - y) / B, computed without dividing
by p.

``'quadratic'`` (alias ``'MSE'``): the original's 0.5 * sum((y_hat - y)^2),
summed over the batch, back-propagated through the head's activation.
"""

from __future__ import annotations

from ._backend import array_module

LOSSES = ("cross_entropy", "quadratic")
_ALIASES = {"cross_entropy": "cross_entropy", "ce": "cross_entropy", "quadratic": "quadratic", "mse": "quadratic"}


def resolve_loss(name):
    """The canonical loss name for ``name`` (case-insensitive aliases accepted)."""
    key = name.lower() if isinstance(name, str) else None
    if key not in _ALIASES:
        raise ValueError(f"loss must be one of {LOSSES} (or 'CE', 'MSE'), got {name!r}")
    return _ALIASES[key]


def _log_softmax_columns(z):
    xp = array_module(z)
    shifted = z - z.max(axis=0, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=0, keepdims=True))


def loss_and_gradient(loss, activation, outputs, targets):
    """Return (loss value, dL/dz) for a head with ``activation`` and feature-major arrays.

    ``outputs`` are the head's outputs (classes, batch); ``targets`` the target
    matrix of the same shape (one-hot rows of the labels, transposed).
    """
    xp = array_module(outputs)
    batch = outputs.shape[1]
    if loss == "cross_entropy":
        if activation == "softmax":
            probabilities = outputs
            log_p = xp.log(xp.maximum(outputs, xp.finfo(outputs.dtype).tiny))
        else:
            log_p = _log_softmax_columns(outputs)
            probabilities = xp.exp(log_p)
        value = -float((targets * log_p).sum()) / batch
        grad = (probabilities - targets) * outputs.dtype.type(1.0 / batch)
        if activation == "relu":
            grad *= outputs > 0
        return value, grad
    residual = outputs - targets
    value = 0.5 * float((residual * residual).sum())
    if activation == "relu":
        residual *= outputs > 0
    elif activation == "softmax":
        residual = outputs * (residual - (residual * outputs).sum(axis=0, keepdims=True))
    return value, residual
