"""Dense layers: weights W of shape (n_in, n_out), optionally with a prune mask that keeps pruned weights at zero."""

from __future__ import annotations

import numpy as np

from ._layer import Layer


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
        """Number of weights in the matrix, pruned ones included (they are stored as zeros)."""
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
    """Accept a dense array or a sparse matrix given in the dense (n_in, n_out) orientation.

    A (SciPy or cupyx) sparse matrix becomes a dense array on its own device; arrays pass as
    they are, without a trip to the host.
    """
    if hasattr(weights, "toarray"):
        return weights.toarray()
    return weights


class DenseReluLayer(DenseLayer):
    """Dense layer with a ReLU activation (``full_relu_layer`` in the original documentation)."""

    activation = "relu"


class DenseLinearLayer(DenseLayer):
    """Dense layer with no activation (``full_linear_layer``)."""

    activation = "linear"


class DenseSoftmaxLayer(DenseLayer):
    """Dense layer with a softmax over its units (``full_softmax_layer``)."""

    activation = "softmax"


DENSE_LAYERS = {cls.activation: cls for cls in (DenseReluLayer, DenseLinearLayer, DenseSoftmaxLayer)}
