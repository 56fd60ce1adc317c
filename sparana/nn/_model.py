"""The model: a sequence of dense or sparse layers on one backend, its forward and backward passes."""

from __future__ import annotations

import weakref

import numpy as np

from .._backend import Backend, to_host
from .._checks import check_dropout, check_integer
from .._threads import core_threads, map_on_cores, single_threaded_blas
from . import _batches, _initializers, _sparse_init, _surgery
from ._layer import DROPOUT_STYLES, Layer
from ._losses import loss_and_gradient, resolve_loss

# Rows evaluated at once by the inference methods, to bound their memory.
EVAL_CHUNK = 8192
# Rows evaluated at once on the CPU by a model with sparse layers, when there are at least as many
# such chunks as threads: one batch tile of the sparse kernels (see sparana.kernels.cpu). The
# chunks are shared out between the cores, each running its chunks through every layer on one
# thread, so that a layer's outputs are still in that core's cache when the next layer reads them:
# the 95% model on 1,000 images, 3.1 ms against 4.3 ms in one parallel pass on two cores (64 rows a
# chunk were slower, the calls' own cost).
SPARSE_EVAL_CHUNK = 128


class Model:
    """A feed-forward network: ``Model(input_size, layers, dropout=None, comp_type=None, seed=None)``.

    ``layers`` is a list of layer objects (dense or sparse, ReLU, linear or softmax); the last
    layer's size is the number of classes. ``comp_type`` is 'CPU', 'GPU' or None (the GPU when
    CuPy and a device are present). ``dtype`` is 'float32' (default) or 'float64'. ``seed`` (an
    int, a ``SeedSequence`` or a ``Generator``) drives initialisation and dropout. ``dropout`` is
    the fraction of hidden ReLU outputs dropped while training; ``dropout_style='inverted'``
    (default) rescales the kept outputs during training, ``'original'`` drops ReLU outputs without
    rescaling and drops weights (DropConnect) of linear and softmax layers. Dropout is always off
    in evaluation.
    """

    def __init__(self, input_size, layers, dropout=None, comp_type=None, seed=None, dtype="float32",
                 dropout_style="inverted"):
        if not isinstance(layers, (list, tuple)) or not layers:
            raise ValueError(f"layers must be a non-empty list of layer objects, got {layers!r}")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers[{i}] must be a layer object (e.g. DenseReluLayer(size=100)), "
                                f"got {type(layer).__name__}")
        if input_size is not None:
            check_integer("input_size", input_size, low=1)
        check_dropout(dropout)
        if dropout_style not in DROPOUT_STYLES:
            raise ValueError(f"dropout_style must be one of {DROPOUT_STYLES}, got {dropout_style!r}")
        self._layers = list(layers)
        self._dropout = dropout
        self._dropout_style = dropout_style
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.backend = Backend(comp_type, dtype)
        self._input_size = input_size
        self._optimizers = weakref.WeakSet()  # the optimizers built for this model (a Rewirer finds them)
        self._bind_layers()

    def _bind_layers(self):
        size = self._input_size
        for i, layer in enumerate(self._layers):
            pending = layer._pending[0]
            if size is None and pending is not None:  # infer from the first layer's given weights
                shape = np.shape(pending)  # arrays and sparse matrices: read without a copy
                size = shape[1] if layer.is_sparse else shape[0]
                self._input_size = int(size)
            if size is None:
                raise ValueError("input_size is None and the first layer has no weights to infer it from")
            if layer.has_parameters and layer.input_size not in (None, size):
                raise ValueError(f"layer {i} has {layer.input_size} inputs but the previous layer has {size} units")
            layer.bind(self.backend, size, self.rng, self._dropout, self._dropout_style)
            if layer.size is None:
                raise ValueError(f"layer {i} has no size: give size=... or weights=...")
            size = layer.size

    def reseed(self, seed):
        """Draw dropout (and later initialisations) from a new stream: an int, SeedSequence or Generator."""
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        for layer in self._layers:
            layer._rng = self.rng

    # -------------------------------------------------------------- properties
    @property
    def layers(self):
        """The layer objects, input side first (surgery may replace them)."""
        return self._layers

    @property
    def optimizers(self):
        """The optimizers built for this model that are still alive (oldest first is not promised)."""
        return list(self._optimizers)

    @property
    def depth(self):
        """Number of layers."""
        return len(self._layers)

    @property
    def input_size(self):
        return self._input_size

    @property
    def comp_type(self):
        """'CPU' or 'GPU': the backend the arrays live on."""
        return self.backend.comp_type

    @property
    def dtype(self):
        """The float type of every array (numpy.float32 or numpy.float64)."""
        return self.backend.dtype

    @property
    def dropout(self):
        """The fraction dropped while training (None: no dropout); a layer may override it."""
        return self._dropout

    @property
    def layer_type(self):
        """'Full', 'Sparse' or 'Mixed'."""
        kinds = {layer.layer_type for layer in self._layers}
        return kinds.pop() if len(kinds) == 1 else "Mixed"

    @property
    def num_classes(self):
        """Units of the last layer: the number of classes."""
        return self._layers[-1].size

    @property
    def sizes(self):
        """Units per layer, input first: [input_size, n_1, ..., n_L]."""
        return [self._input_size] + [layer.size for layer in self._layers]

    def __repr__(self):
        body = ", ".join(f"{type(layer).__name__}({layer.size})" for layer in self._layers)
        return f"Model(input_size={self._input_size}, [{body}], comp_type={self.comp_type!r})"

    def _inputs(self, inputs):
        """Inputs (batch, input_size) as a checked feature-major (input_size, batch) array on the device."""
        return _batches.feature_major(self.backend, inputs, self._input_size)

    def targets(self, labels, batch):
        """One-hot (or given) targets as a feature-major (classes, batch) array on the device."""
        return _batches.targets(self.backend, labels, batch, self.num_classes)

    # ----------------------------------------------------------------- forward
    def forward(self, x, train=False, depth=None):
        """Run feature-major inputs through the first ``depth`` layers (all by default)."""
        for layer in self._layers[:self.depth if depth is None else depth]:
            x = layer.forward(x, train=train)
        return x

    def _blas_context(self):
        """One BLAS thread while a CPU model with sparse layers runs (see sparana._threads)."""
        return single_threaded_blas(not self.backend.is_gpu and any(layer.is_sparse for layer in self._layers))

    def _evaluate(self, inputs, depth=None):
        """Batch-major outputs after ``depth`` layers (all by default), in chunks, without dropout."""
        x = self._inputs(inputs)
        xp = self.backend.xp
        sparse_on_cpu = not self.backend.is_gpu and any(layer.is_sparse for layer in self._layers)
        # (fewer tiles than threads: one pass, its kernels on every thread)
        per_core = sparse_on_cpu and x.shape[1] >= SPARSE_EVAL_CHUNK * core_threads()
        chunk = min(EVAL_CHUNK, SPARSE_EVAL_CHUNK) if per_core else EVAL_CHUNK
        with self._blas_context():
            if x.shape[1] <= chunk:
                return xp.ascontiguousarray(self.forward(x, depth=depth).T)
            starts = range(0, x.shape[1], chunk)
            if not per_core:
                return xp.concatenate([self.forward(x[:, s:s + chunk], depth=depth).T for s in starts], axis=0)

            def outputs(start):
                # Each chunk copied in its own thread: a layer's buffer for non-contiguous inputs
                # is not for two threads at once.
                part = x[:, start:start + chunk]
                copy = self.backend.empty(part.shape)
                copy[...] = part
                return self.forward(copy, depth=depth).T

            return xp.concatenate(map_on_cores(outputs, starts), axis=0)

    def outputs(self, inputs):
        """The final layer's outputs (batch, classes), as an array of the model's backend."""
        return self._evaluate(inputs)

    def partial_outputs(self, inputs, depth):
        """The outputs (batch, n_depth) of the first ``depth`` layers (0 gives the inputs)."""
        return self._evaluate(inputs, depth=check_integer("depth", depth, 0, self.depth))

    def activations(self, inputs):
        """Every layer's input and output: [x, a_1, ..., a_L], batch-major, one forward pass."""
        x = self._inputs(inputs)
        result = [x.T]
        with self._blas_context():
            for layer in self._layers:
                x = layer.forward(x)
                result.append(x.T)
        return result

    def softmax_output(self, inputs):
        """Softmax probabilities of the outputs (the outputs themselves for a softmax head)."""
        outputs = self.outputs(inputs)
        if self._layers[-1].act.probabilities:
            return outputs
        xp = self.backend.xp
        exp = xp.exp(outputs - outputs.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    # ---------------------------------------------------------------- accuracy
    def get_accuracy(self, inputs, labels):
        """Top-1 accuracy: the fraction of rows whose largest output is the label's class."""
        return self.get_top_k_accuracy(inputs, labels, k=1)

    def get_top_k_accuracy(self, inputs, labels, k=5):
        """Fraction of rows whose label is among the k largest outputs (ties count against the label)."""
        check_integer("k", k, 1, self.num_classes)
        outputs = self.outputs(inputs)
        truth = self.targets(labels, outputs.shape[0]).argmax(axis=0)
        if outputs.shape[0] == 0:
            raise ValueError("accuracy needs at least one input row, got 0")
        if k == 1:
            hits = outputs.argmax(axis=1) == truth
        else:
            target_scores = outputs[self.backend.xp.arange(outputs.shape[0]), truth]
            hits = (outputs > target_scores[:, None]).sum(axis=1) < k
        return float(hits.mean())

    top_k_accuracy = get_top_k_accuracy

    def one2ratio(self, inputs):
        """Per row, the ratio of the largest output to the second largest (a confidence margin)."""
        outputs = to_host(self.outputs(inputs))
        if outputs.shape[1] < 2:
            raise ValueError("one2ratio needs at least two outputs per row")
        top2 = np.sort(outputs, axis=1)[:, -2:]
        with np.errstate(divide="ignore", invalid="ignore"):
            return list((top2[:, 1] / top2[:, 0]).astype(float))

    # ---------------------------------------------------------------- backward
    def backprop(self, inputs, labels, loss="cross_entropy", backward_layers=None, reduction=None, grad_hook=None,
                 parameter_gradients=True):
        """One training forward and backward pass; fill each layer's ``grad_weights``/``grad_biases``.

        Only the last ``backward_layers`` layers get gradients. ``reduction``: 'mean' or 'sum'
        over the batch, None for the loss's usual one (see :mod:`._losses`). ``grad_hook(i,
        grad_z)``, when given, sees each layer's dL/dz (features, batch) before that layer's
        backward pass (RigL's rewiring ranks dense gradients from it, and needs no
        ``parameter_gradients``: False leaves them out). Returns the batch loss.
        """
        loss = resolve_loss(loss)
        first = self._first_trained(backward_layers)
        x = self._inputs(inputs)
        outputs = self.forward(x, train=True)
        value, grad = loss_and_gradient(loss, self._layers[-1].act, outputs, self.targets(labels, x.shape[1]),
                                        reduction)
        for i in range(self.depth - 1, first - 1, -1):
            if grad_hook is not None:
                grad_hook(i, grad)
            grad = self._layers[i].backward(grad, input_grad=i > first, parameters=parameter_gradients)
            if i > first:
                grad = self._layers[i - 1].activation_backward(grad)
        return value

    def _first_trained(self, backward_layers):
        if backward_layers is None:
            return 0
        return self.depth - check_integer("backward_layers", backward_layers, 1, self.depth)

    def gradients(self, inputs, labels, loss="cross_entropy", l1=0.0, l2=0.0, reduction=None):
        """[(dL/dW, dL/db), ...] per layer, copies, including the penalty l1*sum|W| + l2/2*sum W^2.

        dL/dW has the shape of the layer's ``values`` (the stored entries for a sparse layer).
        """
        self.backprop(inputs, labels, loss, reduction=reduction)
        result = []
        for layer in self._layers:
            grad = layer.grad_weights.copy()
            if l2:
                grad += layer.values * layer.values.dtype.type(l2)
            if l1:
                grad += self.backend.xp.sign(layer.values) * layer.values.dtype.type(l1)
            result.append((grad, layer.grad_biases.copy()))
        return result

    def loss(self, inputs, labels, loss="cross_entropy", l1=0.0, l2=0.0, reduction=None):
        """The loss on a batch (no dropout), plus the penalty l1*sum|W| + l2/2*sum W^2."""
        x = self._inputs(inputs)
        value, _ = loss_and_gradient(resolve_loss(loss), self._layers[-1].act, self.forward(x),
                                     self.targets(labels, x.shape[1]), reduction)
        for layer in self._layers:
            if l1:
                value += l1 * float(abs(layer.values).sum())
            if l2:
                value += 0.5 * l2 * float((layer.values * layer.values).sum())
        return value

    def parameter_count(self, nonzero=False):
        """Stored weights plus biases (``nonzero=True`` counts only non-zero weights)."""
        total = 0
        for layer in self._layers:
            layer._require_parameters()
            total += (int((layer.values != 0).sum()) if nonzero else layer.nnz) + layer.size
        return total

    # ---------------------------------------- initialisation and surgery (see their modules)
    def initialize_weights(self, init_method="Xavier", bias_constant=0.0, scale="live"):
        """Initialise every layer; biases are set to ``bias_constant``.

        ``init_method``: 'Xavier' (normal, std sqrt(3/(fan_in+fan_out))), 'He' (std
        sqrt(2/fan_in)), a float std, 'XSparse' (a lottery-ticket reset: new values only on each
        layer's current pattern, normal with mean density*std and the Xavier std), or a list of
        (weights, biases) pairs, one per layer. Sparse layers keep their pattern and get new values
        on it, with the rule applied to each weight's live fans (``scale='live'``) or to the
        layer's full shape (``scale='dense'``, the original's).
        """
        return _initializers.initialize_weights(self, init_method, bias_constant, scale)

    def load_weights(self, parameters):
        """Load a list of (weights, biases) pairs, one per layer, checking every shape first."""
        return _initializers.load_weights(self, parameters)

    def initialize_sparse_weights(self, density, init_method="Xavier", bias_constant=0.0, distribution="uniform",
                                  scale="live", epsilon=None):
        """Random sparse initialisation: each layer keeps round(density * size) random positions.

        ``density`` is in (0, 1], or a list with one density per layer. ``distribution``:
        'uniform', 'erdos_renyi' (SET: with ``epsilon`` and ``density=None``, each layer stores
        about epsilon * (n_in + n_out) weights; without, a global density spread in proportion to
        (n_in + n_out) / (n_in * n_out)) or 'erk' (RigL's name for the latter). ``init_method``:
        'Xavier', 'He', 'Xavier_2' (the Xavier std divided by the density) or a float std.
        ``scale='live'`` (default) applies 'Xavier' and 'He' to each weight's live connections
        (its unit's stored fan-in, its input's stored fan-out), so that a network trained sparse
        from scratch learns; ``scale='dense'`` applies them to the layer's full shape (the
        original's). Sparse layers get a CSR pattern; dense layers get the same pattern as a
        prune mask. The new pattern replaces any earlier one. Returns the densities.
        """
        return _sparse_init.initialize_sparse_weights(self, density, init_method, bias_constant, distribution,
                                                      scale, epsilon)

    def convert_comp_type(self, comp_type=None):
        """Move every array to the other backend (or to ``comp_type``); optimizer state follows."""
        return _surgery.convert_comp_type(self, comp_type)

    def convert_to_sparse(self, layers=None):
        """Replace dense layers (all, or the indices ``layers``) by sparse ones; the outputs do not change."""
        _surgery.convert(self, layers, to_sparse=True)

    def convert_to_dense(self, layers=None):
        """Replace sparse layers by dense ones; the pattern becomes a prune mask, outputs do not change."""
        _surgery.convert(self, layers, to_sparse=False)

    def remove_activations(self, verbose=False):
        """Remove hidden units with no incoming or no outgoing weights; return the new layer sizes."""
        return _surgery.remove_activations(self, verbose)
