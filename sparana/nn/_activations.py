"""Activations: what a layer applies to its pre-activation z = W x + b, and everything that depends on it.

Each activation is a small object that knows

* its forward pass, in place on z (ReLU is applied by the product kernels together with the bias:
  ``relu`` says so), and its derivative (``backward``: from dL/d(outputs) to dL/dz);
* the softmax cross-entropy of a head with this activation (``cross_entropy``);
* what a unit with no incoming weights outputs, the constant its bias gives (``constant``), which
  surgery folds into the next layer; ``per_unit`` is False where the units cannot be taken apart
  (softmax normalises over all of them);
* whether its outputs are the ones dropout drops (``output_dropout``: ReLU layers), and whether
  they are class probabilities already (``probabilities``: softmax).

Arrays are feature-major, (units, batch), on either backend.
"""

from __future__ import annotations

import numpy as np

from .._backend import array_module
from ..kernels import generic


class Activation:
    """The identity ("linear"): the base of the others."""

    name = "linear"
    relu = False  # applied by the product kernels with the bias
    per_unit = True
    output_dropout = False
    probabilities = False

    def __repr__(self):
        return f"<activation {self.name!r}>"

    def forward(self, z):
        """Finish the activation in place on z (bias added, ReLU applied already when ``relu``)."""

    def backward(self, grad, outputs, kernels, scale=1.0):
        """dL/dz from dL/d(outputs), in place where possible; ``scale`` is the inverted-dropout factor."""
        return grad

    def cross_entropy(self, outputs, targets):
        """(log-probabilities, dL/dz) of the softmax cross-entropy on this head's outputs (classes, batch)."""
        log_p = log_softmax_columns(outputs)
        # (the generic kernels are array-module code: right for NumPy and CuPy arrays alike)
        probabilities = without_subnormals(array_module(outputs).exp(log_p))
        return log_p, self.backward(probabilities - targets, outputs, generic)

    def constant(self, bias):
        """The output (host array) of units that have no incoming weights and these biases."""
        return np.asarray(bias)


class Relu(Activation):
    name = "relu"
    relu = True
    output_dropout = True

    def backward(self, grad, outputs, kernels, scale=1.0):
        kernels.relu_backward(grad, outputs, scale)
        return grad

    def constant(self, bias):
        return np.maximum(bias, 0)


class Softmax(Activation):
    """Softmax over the units: a probability per class. A head of this kind feeds the cross-entropy
    its probabilities directly, and its gradient p - y is computed without dividing by p."""

    name = "softmax"
    per_unit = False
    probabilities = True

    def forward(self, z):
        xp = array_module(z)
        z -= z.max(axis=0, keepdims=True)
        xp.exp(z, out=z)
        z /= z.sum(axis=0, keepdims=True)
        without_subnormals(z)

    def backward(self, grad, outputs, kernels, scale=1.0):
        return outputs * (grad - (grad * outputs).sum(axis=0, keepdims=True))

    def cross_entropy(self, outputs, targets):
        xp = array_module(outputs)
        return xp.log(xp.maximum(outputs, xp.finfo(outputs.dtype).tiny)), outputs - targets

    def constant(self, bias):
        raise ValueError("a softmax unit's output depends on every other unit: it cannot be folded on its own")


ACTIVATIONS = {activation.name: activation for activation in (Relu(), Activation(), Softmax())}
NAMES = tuple(ACTIVATIONS)


def activation(name):
    """The activation object of a name ('relu', 'linear', 'softmax'), or the object itself."""
    if isinstance(name, Activation):
        return name
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {NAMES}, got {name!r}")
    return ACTIVATIONS[name]


def without_subnormals(p):
    """``p`` (probabilities) with those below the square root of the smallest normal number set to 0,
    in place: no gradient computed from them meets a subnormal number.

    exp() of a log-probability below -87 (float32) is subnormal, and so is a small probability
    once the loss divides it by the batch size; every product with a subnormal number takes the
    CPU's slow path: with a few hundred of them in dL/dz, the weight gradient of a 500,000 x 10
    head took 270 to 540 ms instead of 30. The change, below 1.1e-19 (float32) or 1.5e-154
    (float64), is far below the rounding of any gradient entry that matters beside it.
    """
    p[p < np.sqrt(np.finfo(p.dtype).tiny)] = 0
    return p


def log_softmax_columns(z):
    """log softmax over axis 0 (the classes of a feature-major batch), overflow-safe, as a new array."""
    xp = array_module(z)
    shifted = z - z.max(axis=0, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=0, keepdims=True))

