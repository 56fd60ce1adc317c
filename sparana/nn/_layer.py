"""The layer base: parameters, masks, dropout, and the forward and backward passes side by side.

Conventions (see also :mod:`sparana.kernels`):

* Activations inside a model are feature-major, shape (features, batch); the model transposes at
  its boundary, so users see (batch, features).
* A dense layer (:mod:`._dense`) stores ``weights`` as (n_in, n_out); a sparse layer
  (:mod:`._sparse`) stores them as CSR of shape (n_out, n_in). Either way ``values`` is the
  trainable array (the dense matrix, or the CSR data vector), and statistics, masks and optimizer
  state have the shape of ``values``; ``value_keys()`` places each entry of ``values`` in the dense
  (n_in, n_out) matrix (see :mod:`._keys`).
* Gradients are true gradients of the loss. ``backward(grad_z)`` takes the gradient with respect
  to this layer's pre-activation z and fills ``grad_weights`` / ``grad_biases``;
  ``activation_backward(grad_a)`` turns the gradient with respect to the layer's output into the
  gradient with respect to z.

A subclass provides the weight storage and three products: ``_product`` (z = W x + b, with ReLU
when the activation asks), ``_weight_gradient`` and ``_input_gradient``.
"""

from __future__ import annotations

import numpy as np

from .._checks import check_dropout, check_integer
from ._activations import ACTIVATIONS

DROPOUT_STYLES = ("inverted", "original")


class Layer:
    """Common state and the activation/dropout logic of dense and sparse layers.

    ``activation`` names the activation ('relu', 'linear', 'softmax'); ``act`` is its object
    (:mod:`._activations`), set from the name when a subclass is defined.
    """

    activation = "linear"
    act = ACTIVATIONS["linear"]
    is_sparse = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.act = ACTIVATIONS[cls.activation]

    def __init__(self, size=None, weights=None, biases=None, dropout=None, inputs=None, learning_rate=None):
        # ``inputs`` and ``learning_rate`` are accepted and ignored (the original documentation passes them).
        self._size = None if size is None else check_integer("layer size", size, low=1)
        check_dropout(dropout)
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
        """'Full' or 'Sparse' (the documentation's names)."""
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
        """Whether the layer holds weights and biases yet."""
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
            array = self.backend.empty(shape, dtype=dtype)
            self._buffers[name] = array
        return array

    def _clear_cache(self):
        self._buffers = {}
        self._inputs = self._outputs = self._dropout_mask = None

    # ---------------------------------------------------------------- forward
    def _drop_connect(self, train):
        """Whether this pass drops weights: ``dropout_style='original'`` on layers without output dropout."""
        return train and self.dropout and self.dropout_style == "original" and not self.act.output_dropout

    def forward(self, x, train=False):
        """Outputs (n_out, batch) for inputs x (n_in, batch); caches what backward needs when ``train``."""
        self._require_parameters()
        shape = (self._size, x.shape[1])
        out = self._buffer("out", shape) if train else self.backend.empty(shape)
        values = self.values
        mask = None
        if self._drop_connect(train):
            mask = self._bernoulli(values.shape)
            values = values * mask
        self._product(values, x, out, relu=self.act.relu)
        self.act.forward(out)
        if train and self.dropout and self.act.output_dropout:
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
        rng = self.backend.device_rng(self._rng)  # the model's stream (on the GPU, a device generator from it)
        return (rng.random(shape, dtype=np.float32) < keep).astype(self.backend.dtype)

    # --------------------------------------------------------------- backward
    def activation_backward(self, grad):
        """Gradient w.r.t. z from the gradient w.r.t. this layer's outputs (in place where possible)."""
        inverted = self.dropout and self.dropout_style == "inverted" and self.act.output_dropout
        scale = 1.0 / (1.0 - self.dropout) if inverted else 1.0
        return self.act.backward(grad, self._outputs, self.backend.kernels, scale)

    def backward(self, grad_z, input_grad=True, parameters=True):
        """Fill ``grad_weights``/``grad_biases`` from dL/dz (unless ``parameters`` is False); return
        dL/dx (n_in, batch) if asked."""
        if self._outputs is None:
            raise RuntimeError("backward needs a forward pass with train=True first")
        dropped = self._drop_connect(True) and self._dropout_mask is not None
        if not parameters:
            values = self.values * self._dropout_mask if dropped else self.values
            return self._input_gradient_of(grad_z, values) if input_grad else None
        xp = self.backend.xp
        if self.grad_biases is None or self.grad_biases.shape != self._biases.shape:
            self.grad_biases = xp.empty_like(self._biases)
        self.backend.kernels.row_sums(grad_z, self.grad_biases)
        values = self.values
        if self.grad_weights is None or self.grad_weights.shape != values.shape:
            self.grad_weights = xp.empty_like(values)
        self._weight_gradient(grad_z, self._inputs, self.grad_weights)
        if dropped:
            self.grad_weights *= self._dropout_mask
            values = values * self._dropout_mask
        return self._input_gradient_of(grad_z, values) if input_grad else None

    def _input_gradient_of(self, grad_z, values):
        grad_x = self._buffer("grad_x", (self.input_size, grad_z.shape[1]))
        self._input_gradient(values, grad_z, grad_x)
        return grad_x
