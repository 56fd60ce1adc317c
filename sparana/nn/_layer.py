"""Layers: each keeps its forward pass and its backward pass side by side.

Conventions (see also :mod:`sparana.kernels`):

* Activations inside a model are feature-major, shape (features, batch); the
  model transposes at its boundary, so users see (batch, features).
* A dense layer stores ``weights`` as (n_in, n_out), as the original did; a
  sparse layer stores them as CSR of shape (n_out, n_in) (see
  :mod:`sparana.sparse_layers`). Either way ``values`` is the trainable array
  (the dense matrix, or the CSR data vector) and statistics, masks and
  optimizer state have the shape of ``values``.
* Gradients are true gradients of the loss (the original returned negative
  gradients and added them; the updates are the same).
* ``backward(grad_z)`` takes the gradient with respect to this layer's
  pre-activation z and fills ``grad_weights`` / ``grad_biases``;
  ``activation_backward(grad_a)`` turns the gradient with respect to the
  layer's output into the gradient with respect to z.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .._backend import array_module, to_host

ACTIVATIONS = ("relu", "linear", "softmax")
DROPOUT_STYLES = ("inverted", "original")


def check_ratio(name, value, low=0.0, high=1.0, low_open=False):
    """Raise a ValueError unless ``value`` is a real number in [low, high] (or (low, high])."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low < value if low_open else low <= value) and value <= high
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}]"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")


def check_dropout(value, name="dropout"):
    """Raise a ValueError unless ``value`` is None or a fraction dropped in [0, 1)."""
    if value is None:
        return
    check_ratio(name, value)
    if value >= 1:
        raise ValueError(f"{name} must be below 1 (the fraction dropped), got {value!r}")


class Layer:
    """Common state and the activation/dropout logic of dense and sparse layers."""

    activation = "linear"
    is_sparse = False

    def __init__(self, size=None, weights=None, biases=None, dropout=None, inputs=None, learning_rate=None):
        # ``inputs`` and ``learning_rate`` exist for compatibility with the original, which ignored them.
        if size is not None and (not isinstance(size, numbers.Integral) or isinstance(size, bool) or size < 1):
            raise ValueError(f"layer size must be a positive integer, got {size!r}")
        check_dropout(dropout)
        self._size = None if size is None else int(size)
        self._pending = (weights, biases)
        self._own_dropout = dropout
        self.dropout = dropout
        self.dropout_style = "inverted"
        self.backend = None
        self.input_size = None
        self._biases = None
        self._training_mask = None
        self._rng = None
        self._version = 0
        self._buffers = {}
        self._inputs = None
        self._outputs = None
        self._dropout_mask = None
        self.grad_weights = None
        self.grad_biases = None

    # ----------------------------------------------------------------- set-up
    def bind(self, backend, input_size, rng, dropout=None, dropout_style="inverted"):
        """Attach the layer to a model's backend; convert any given weights to it."""
        self.backend = backend
        self.input_size = input_size
        self._rng = rng
        self.dropout = self._own_dropout if self._own_dropout is not None else dropout
        self.dropout_style = dropout_style
        weights, biases = self._pending
        if weights is not None:
            self.set_parameters(weights, biases)
        elif self.has_parameters:
            self._move_to(backend)
        self._pending = (None, None)

    @property
    def size(self):
        """Number of units (outputs) of the layer."""
        return self._size

    @property
    def activation_type(self):
        return self.activation.capitalize()

    @property
    def layer_type(self):
        """'Full' or 'Sparse', the original's names."""
        return "Sparse" if self.is_sparse else "Full"

    @property
    def biases(self):
        return self._biases

    @biases.setter
    def biases(self, value):
        value = self.backend.asfloat(value, copy=True).reshape(-1)  # the layer's own copy
        if value.shape != (self._size,):
            raise ValueError(f"biases of shape ({self._size},) expected, got {tuple(value.shape)}")
        self._biases = value

    def _load_biases(self, biases):
        """Set the biases (checked), or zeros when none are given and the current ones do not fit."""
        if biases is not None:
            self.biases = biases
        elif self._biases is None or self._biases.shape != (self._size,):
            self._biases = self.backend.zeros((self._size,))

    @property
    def has_parameters(self):
        return self._biases is not None

    @property
    def version(self):
        """Counter bumped whenever the trainable entries change (masks, pattern) or move to another device."""
        return self._version

    @property
    def training_mask(self):
        """Boolean mask of ``values``' shape: the entries a selected optimizer trains (None: not set)."""
        return self._training_mask

    @training_mask.setter
    def training_mask(self, mask):
        self._training_mask = None if mask is None else self._as_mask(mask, "training_mask")
        self._version += 1

    def _as_mask(self, mask, name):
        """A boolean copy of ``mask`` on the layer's device, checked to have the shape of ``values``."""
        mask = self.backend.asarray(mask, dtype=bool, copy=True)
        if tuple(mask.shape) != tuple(self.values.shape):
            raise ValueError(f"{name} of shape {tuple(self.values.shape)} expected, got {tuple(mask.shape)}")
        return mask

    def _require_parameters(self):
        if not self.has_parameters:
            raise RuntimeError("the layer has no weights yet: call model.initialize_weights(...) "
                               "(or initialize_sparse_weights for sparse layers) first")

    def _buffer(self, name, shape, dtype=None):
        """A reusable work array (training only: results of eval passes are fresh arrays)."""
        dtype = dtype or self.backend.dtype
        array = self._buffers.get(name)
        if array is None or array.shape != shape or array.dtype != dtype:
            array = self.backend.xp.empty(shape, dtype=dtype)
            self._buffers[name] = array
        return array

    def _clear_cache(self):
        self._buffers = {}
        self._inputs = self._outputs = self._dropout_mask = None

    # ---------------------------------------------------------------- forward
    def _drop_connect(self, train):
        return train and self.dropout and self.dropout_style == "original" and self.activation != "relu"

    def forward(self, x, train=False):
        """Outputs (n_out, batch) for inputs x (n_in, batch); caches what backward needs when ``train``."""
        self._require_parameters()
        batch = x.shape[1]
        shape = (self._size, batch)
        out = self._buffer("out", shape) if train else self.backend.xp.empty(shape, dtype=self.backend.dtype)
        values = self.values
        mask = None
        if self._drop_connect(train):
            mask = self._bernoulli(values.shape)
            values = values * mask
        self._product(values, x, out, relu=self.activation == "relu")
        if self.activation == "softmax":
            _softmax_columns(out)
        elif self.activation == "relu" and train and self.dropout:
            mask = self._bernoulli(out.shape)
            out *= mask
            if self.dropout_style == "inverted":
                out *= out.dtype.type(1.0 / (1.0 - self.dropout))
        if train:
            self._inputs = x
            self._outputs = out
            self._dropout_mask = mask
        return out

    def _bernoulli(self, shape):
        keep = 1.0 - self.dropout
        xp = self.backend.xp
        if self.backend.is_gpu:
            seed = int(self._rng.integers(2**63))
            return (xp.random.default_rng(seed).random(shape, dtype=np.float32) < keep).astype(self.backend.dtype)
        return (self._rng.random(shape, dtype=np.float32) < keep).astype(self.backend.dtype)

    # --------------------------------------------------------------- backward
    def activation_backward(self, grad):
        """Gradient w.r.t. z from the gradient w.r.t. this layer's outputs (in place where possible)."""
        if self.activation == "relu":
            scale = 1.0 / (1.0 - self.dropout) if self.dropout and self.dropout_style == "inverted" else 1.0
            self.backend.kernels.relu_backward(grad, self._outputs, scale)
            return grad
        if self.activation == "softmax":
            p = self._outputs
            return p * (grad - (grad * p).sum(axis=0, keepdims=True))
        return grad

    def backward(self, grad_z, input_grad=True):
        """Fill ``grad_weights``/``grad_biases`` from dL/dz; return dL/dx (n_in, batch) if asked."""
        if self._outputs is None:
            raise RuntimeError("backward needs a forward pass with train=True first")
        xp = self.backend.xp
        if self.grad_biases is None or self.grad_biases.shape != self._biases.shape:
            self.grad_biases = xp.empty_like(self._biases)
        xp.sum(grad_z, axis=1, out=self.grad_biases)
        values = self.values
        if self.grad_weights is None or self.grad_weights.shape != values.shape:
            self.grad_weights = xp.empty_like(values)
        self._weight_gradient(grad_z, self._inputs, self.grad_weights)
        if self._drop_connect(True) and self._dropout_mask is not None:
            self.grad_weights *= self._dropout_mask
            values = values * self._dropout_mask
        if not input_grad:
            return None
        grad_x = self._buffer("grad_x", (self.input_size, grad_z.shape[1]))
        self._input_gradient(values, grad_z, grad_x)
        return grad_x


def _softmax_columns(z):
    """Softmax over axis 0 (the classes of a feature-major batch), in place, overflow-safe."""
    xp = array_module(z)
    z -= z.max(axis=0, keepdims=True)
    xp.exp(z, out=z)
    z /= z.sum(axis=0, keepdims=True)


class DenseLayer(Layer):
    """A fully connected layer with weights W of shape (n_in, n_out) and biases b (n_out,)."""

    def __init__(self, size=None, weights=None, biases=None, dropout=None, inputs=None, learning_rate=None):
        super().__init__(size, weights, biases, dropout, inputs, learning_rate)
        self._weights = None
        self._prune_mask = None

    @property
    def weights(self):
        return self._weights

    @weights.setter
    def weights(self, value):
        self.set_parameters(value, None)

    @property
    def values(self):
        """The trainable weight array (here the dense matrix itself)."""
        return self._weights

    @property
    def nnz(self):
        return int(self._weights.size)

    @property
    def prune_mask(self):
        """Boolean (n_in, n_out) mask of weights kept after pruning; None when nothing is pruned.

        Every optimizer leaves masked-out weights at zero.
        """
        return self._prune_mask

    @prune_mask.setter
    def prune_mask(self, mask):
        if mask is None:
            self._prune_mask = None
        else:
            self._prune_mask = self._as_mask(mask, "prune_mask")
            self._weights *= self._prune_mask
        self._version += 1

    def set_parameters(self, weights, biases=None):
        """Load copies of W (n_in, n_out) and optionally b, checking shapes against the layer."""
        dense = _dense(weights)
        weights = self.backend.asfloat(dense, copy=dense is weights)  # a sparse matrix became a new array
        if weights.ndim != 2:
            raise ValueError(f"weights must be a 2-D (n_in, n_out) matrix, got shape {tuple(weights.shape)}")
        n_in, n_out = weights.shape
        if self.input_size is not None and n_in != self.input_size:
            raise ValueError(f"weights of shape ({self.input_size}, {self._size or n_out}) expected "
                             f"(this layer has {self.input_size} inputs), got {tuple(weights.shape)}")
        if self._size is not None and n_out != self._size:
            raise ValueError(f"weights with {self._size} columns (the layer size) expected, "
                             f"got shape {tuple(weights.shape)}")
        self._size = int(n_out)
        self.input_size = int(n_in)
        if self._prune_mask is not None and self._prune_mask.shape != weights.shape:
            self._prune_mask = None
        self._weights = weights
        if self._prune_mask is not None:
            self._weights *= self._prune_mask
        self._load_biases(biases)
        self._version += 1

    def _move_to(self, backend):
        self.backend = backend
        self._weights = backend.asfloat(self._weights)
        self._biases = backend.asfloat(self._biases)
        for name in ("_prune_mask", "_training_mask"):
            mask = getattr(self, name)
            if mask is not None:
                setattr(self, name, backend.asarray(mask))
        self.grad_weights = self.grad_biases = None
        self._clear_cache()
        self._version += 1  # optimizers move their state to the new device

    def dense_weights(self):
        """W as a dense (n_in, n_out) array on the layer's device."""
        return self._weights

    def value_keys(self):
        """Flat position of every entry of ``values`` in the dense (n_in, n_out) matrix."""
        return np.arange(self._weights.size)

    def keep_only(self, keep):
        """Prune: zero the weights where ``keep`` is False and keep them at zero from now on."""
        keep = self._as_mask(keep, "keep mask")
        self.prune_mask = keep if self._prune_mask is None else keep & self._prune_mask

    def _product(self, values, x, out, relu):
        self.backend.xp.matmul(values.T, x, out=out)
        self.backend.kernels.bias_activation(out, self._biases, relu)

    def _weight_gradient(self, grad_z, x, out):
        self.backend.xp.matmul(x, grad_z.T, out=out)

    def _input_gradient(self, values, grad_z, out):
        self.backend.xp.matmul(values, grad_z, out=out)


def _dense(weights):
    """Accept a dense array or a sparse matrix given in the dense (n_in, n_out) orientation."""
    host = to_host(weights)
    if hasattr(host, "toarray"):
        return host.toarray()
    return weights


class DenseReluLayer(DenseLayer):
    """Dense layer with a ReLU activation (the original's ``full_relu_layer``)."""

    activation = "relu"


class DenseLinearLayer(DenseLayer):
    """Dense layer with no activation (the original's ``full_linear_layer``)."""

    activation = "linear"


class DenseSoftmaxLayer(DenseLayer):
    """Dense layer with a softmax over its units (the original's ``full_softmax_layer``)."""

    activation = "softmax"


DENSE_LAYERS = {cls.activation: cls for cls in (DenseReluLayer, DenseLinearLayer, DenseSoftmaxLayer)}
