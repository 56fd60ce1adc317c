"""The model: a sequence of dense or sparse layers on one backend."""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse

from . import _initializers as init
from .._backend import Backend, to_host
from ._layer import DENSE_LAYERS, DROPOUT_STYLES, Layer, check_dropout
from ._losses import loss_and_gradient, resolve_loss
from .._threads import single_threaded_blas
from ._sparse import SPARSE_LAYERS

# Rows evaluated at once by the inference methods, to bound their memory.
EVAL_CHUNK = 8192


class Model:
    """A feed-forward network: ``Model(input_size, layers, dropout=None, comp_type=None, seed=None)``.

    ``layers`` is a list of layer objects (dense or sparse, ReLU, linear or
    softmax); the last layer's size is the number of classes. ``comp_type`` is
    'CPU', 'GPU' or None (the GPU when CuPy and a device are present).
    ``dtype`` is 'float32' (default) or 'float64'. ``seed`` (an int, a
    ``SeedSequence`` or a ``Generator``) drives initialisation and dropout.
    ``dropout`` is the fraction of hidden ReLU outputs dropped while training;
    ``dropout_style='inverted'`` (default) rescales the kept outputs during
    training, ``'original'`` is the original's: unscaled output dropout on ReLU
    layers and DropConnect on linear and softmax layers. Dropout is always off
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
        if input_size is not None and (not isinstance(input_size, numbers.Integral) or input_size < 1):
            raise ValueError(f"input_size must be a positive integer, got {input_size!r}")
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
        self._bind_layers()

    def _bind_layers(self):
        size = self._input_size
        for i, layer in enumerate(self._layers):
            pending = layer._pending[0]
            if size is None and pending is not None:  # infer from the first layer's given weights
                shape = to_host(pending).shape
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
        return self._layers

    @property
    def depth(self):
        return len(self._layers)

    @property
    def input_size(self):
        return self._input_size

    @property
    def comp_type(self):
        return self.backend.comp_type

    @property
    def dtype(self):
        return self.backend.dtype

    @property
    def dropout(self):
        return self._dropout

    @property
    def layer_type(self):
        """'Full', 'Sparse' or 'Mixed'."""
        kinds = {layer.layer_type for layer in self._layers}
        return kinds.pop() if len(kinds) == 1 else "Mixed"

    @property
    def num_classes(self):
        return self._layers[-1].size

    @property
    def sizes(self):
        """Units per layer, input first: [input_size, n_1, ..., n_L]."""
        return [self._input_size] + [layer.size for layer in self._layers]

    def __repr__(self):
        body = ", ".join(f"{type(layer).__name__}({layer.size})" for layer in self._layers)
        return f"Model(input_size={self._input_size}, [{body}], comp_type={self.comp_type!r})"

    # ---------------------------------------------------------- input checking
    def _inputs(self, inputs):
        """Inputs (batch, input_size) as a feature-major (input_size, batch) array on the device."""
        x = self.backend.asarray(inputs)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        if x.ndim != 2 or x.shape[1] != self._input_size:
            raise ValueError(f"inputs of shape (batch, {self._input_size}) expected, got {tuple(x.shape)}")
        if x.dtype.kind not in "fiub":
            raise TypeError(f"numeric inputs expected, got dtype {x.dtype}")
        x = x.astype(self.backend.dtype, copy=False)
        xp = self.backend.xp
        if x.dtype.kind == "f" and not bool(xp.isfinite(x.sum())) and not bool(xp.isfinite(x).all()):
            bad = int((~xp.isfinite(x)).sum())
            raise ValueError(f"inputs must be finite, got {bad} NaN or infinite value(s)")
        return x.T

    def targets(self, labels, batch):
        """One-hot (or given) targets as a feature-major (classes, batch) array on the device."""
        classes = self.num_classes
        y = self.backend.asarray(labels)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.reshape(-1)
        if y.ndim == 1:
            if y.shape[0] != batch:
                raise ValueError(f"{batch} labels expected (one per input row), got {y.shape[0]}")
            if y.dtype.kind == "f":
                if not bool((y == self.backend.xp.round(y)).all()):
                    raise ValueError("integer class ids (or one-hot rows) expected as labels, got non-integer floats")
            elif y.dtype.kind not in "iu":
                raise TypeError(f"labels must be integer class ids or one-hot rows, got dtype {y.dtype}")
            if batch and (int(y.min()) < 0 or int(y.max()) >= classes):
                raise ValueError(f"class ids in [0, {classes}) expected, got values in [{int(y.min())}, {int(y.max())}]")
            onehot = self.backend.zeros((classes, batch))
            onehot[y.astype(np.int64), self.backend.xp.arange(batch)] = 1
            return onehot
        if y.ndim != 2 or y.shape != (batch, classes):
            raise ValueError(f"labels of shape ({batch},) or one-hot ({batch}, {classes}) expected, got {tuple(y.shape)}")
        y = y.astype(self.backend.dtype, copy=False)
        if not bool(self.backend.xp.isfinite(y).all()):
            raise ValueError("labels must be finite, got NaN or infinite values")
        return y.T

    def _class_ids(self, labels, batch):
        return self.targets(labels, batch).argmax(axis=0)

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
        """Batch-major outputs after ``depth`` layers, evaluated in chunks without dropout."""
        with self._blas_context():
            return self._evaluate_chunks(inputs, depth)

    def _evaluate_chunks(self, inputs, depth):
        x = self._inputs(inputs)
        batch = x.shape[1]
        if depth is None:
            depth = self.depth
        if batch <= EVAL_CHUNK:
            return self.backend.xp.ascontiguousarray(self.forward(x, depth=depth).T)
        parts = [self.forward(x[:, s:s + EVAL_CHUNK], depth=depth).T for s in range(0, batch, EVAL_CHUNK)]
        return self.backend.xp.concatenate(parts, axis=0)

    def outputs(self, inputs):
        """The final layer's outputs (batch, classes), as an array of the model's backend."""
        return self._evaluate(inputs)

    def partial_outputs(self, inputs, depth):
        """The outputs (batch, n_depth) of the first ``depth`` layers (0 gives the inputs)."""
        if not isinstance(depth, numbers.Integral) or not 0 <= depth <= self.depth:
            raise ValueError(f"depth must be an integer in [0, {self.depth}], got {depth!r}")
        return self._evaluate(inputs, depth=depth)

    def activations(self, inputs):
        """Every layer's input and output: [x, a_1, ..., a_L], batch-major, one forward pass."""
        x = self._inputs(inputs)
        result = [x.T]
        with self._blas_context():
            for layer in self._layers:
                x = layer.forward(x)
                result.append(x.T)
        return result

    def get_accuracy(self, inputs, labels):
        """Top-1 accuracy: the fraction of rows whose largest output is the label's class."""
        return self.get_top_k_accuracy(inputs, labels, k=1)

    def get_top_k_accuracy(self, inputs, labels, k=5):
        """Fraction of rows whose label is among the k largest outputs."""
        if not isinstance(k, numbers.Integral) or not 1 <= k <= self.num_classes:
            raise ValueError(f"k must be an integer in [1, {self.num_classes}], got {k!r}")
        outputs = self.outputs(inputs)
        truth = self._class_ids(labels, outputs.shape[0])
        if outputs.shape[0] == 0:
            raise ValueError("accuracy needs at least one input row, got 0")
        xp = self.backend.xp
        if k == 1:
            hits = outputs.argmax(axis=1) == truth
        else:
            target_scores = outputs[xp.arange(outputs.shape[0]), truth]
            # rank = how many outputs beat the label's score (ties count against the label)
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

    def softmax_output(self, inputs):
        """Softmax probabilities of the outputs (the outputs themselves for a softmax head)."""
        outputs = self.outputs(inputs)
        if self._layers[-1].activation == "softmax":
            return outputs
        xp = self.backend.xp
        shifted = outputs - outputs.max(axis=1, keepdims=True)
        exp = xp.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)

    # ---------------------------------------------------------------- gradients
    def backprop(self, inputs, labels, loss="cross_entropy", backward_layers=None, reduction=None):
        """One training forward and backward pass; fill each layer's ``grad_weights``/``grad_biases``.

        Only the last ``backward_layers`` layers get gradients. ``reduction``:
        'mean' or 'sum' over the batch, None for the loss's usual one (see
        sparana._losses). Returns the batch loss.
        """
        loss = resolve_loss(loss)
        first = self._first_trained(backward_layers)
        x = self._inputs(inputs)
        targets = self.targets(labels, x.shape[1])
        outputs = self.forward(x, train=True)
        value, grad = loss_and_gradient(loss, self._layers[-1].activation, outputs, targets, reduction)
        for i in range(self.depth - 1, first - 1, -1):
            grad = self._layers[i].backward(grad, input_grad=i > first)
            if i > first:
                grad = self._layers[i - 1].activation_backward(grad)
        return value

    def _first_trained(self, backward_layers):
        if backward_layers is None:
            return 0
        if not isinstance(backward_layers, numbers.Integral) or not 1 <= backward_layers <= self.depth:
            raise ValueError(f"backward_layers must be an integer in [1, {self.depth}], got {backward_layers!r}")
        return self.depth - int(backward_layers)

    def gradients(self, inputs, labels, loss="cross_entropy", l1=0.0, l2=0.0, reduction=None):
        """[(dL/dW, dL/db), ...] per layer, copies, including the penalty l1*sum|W| + l2/2*sum W^2.

        dL/dW has the shape of the layer's ``values`` (the stored entries for a sparse layer).
        """
        self.backprop(inputs, labels, loss, reduction=reduction)
        xp = self.backend.xp
        result = []
        for layer in self._layers:
            grad = layer.grad_weights.copy()
            if l2:
                grad += layer.values * layer.values.dtype.type(l2)
            if l1:
                grad += xp.sign(layer.values) * layer.values.dtype.type(l1)
            result.append((grad, layer.grad_biases.copy()))
        return result

    def loss(self, inputs, labels, loss="cross_entropy", l1=0.0, l2=0.0, reduction=None):
        """The loss on a batch (no dropout), plus the penalty l1*sum|W| + l2/2*sum W^2."""
        loss = resolve_loss(loss)
        x = self._inputs(inputs)
        targets = self.targets(labels, x.shape[1])
        value, _ = loss_and_gradient(loss, self._layers[-1].activation, self.forward(x), targets, reduction)
        for layer in self._layers:
            if l1:
                value += l1 * float(abs(layer.values).sum())
            if l2:
                value += 0.5 * l2 * float((layer.values * layer.values).sum())
        return value

    # ----------------------------------------------------------- initialisation
    def initialize_weights(self, init_method="Xavier", bias_constant=0.0):
        """Initialise every layer.

        ``init_method``: 'Xavier' (normal, std sqrt(3/(fan_in+fan_out)), the
        original's value), a float std, 'XSparse' (a lottery-ticket reset: new
        values only on each layer's current pattern, normal with mean density*std
        and the Xavier std, as the original), or a list of (weights, biases)
        pairs, one per layer. Biases are set to ``bias_constant``. Sparse layers
        keep their pattern and get new values on it.
        """
        if isinstance(init_method, (list, tuple)):
            return self.load_weights(init_method)
        if not isinstance(bias_constant, numbers.Real) or not np.isfinite(bias_constant):
            raise ValueError(f"bias_constant must be a finite number, got {bias_constant!r}")
        for layer in self._layers:
            n_in, n_out = layer.input_size, layer.size
            if init_method == "XSparse":
                self._reset_on_pattern(layer, bias_constant)
                continue
            std = init.weight_std(init_method, n_in, n_out)
            if layer.is_sparse:
                if layer.pattern is None:
                    raise ValueError("sparse layers need a pattern first: use initialize_sparse_weights(density)")
                layer.values[...] = layer.backend.asarray(init.normal(self.rng, layer.nnz, std, self.dtype))
                layer.biases = np.full(n_out, bias_constant, dtype=self.dtype)
            else:
                weights = init.normal(self.rng, (n_in, n_out), std, self.dtype)
                layer.set_parameters(weights, np.full(n_out, bias_constant, dtype=self.dtype))

    def _reset_on_pattern(self, layer, bias_constant):
        std = init.xavier_std(layer.input_size, layer.size)
        if layer.is_sparse:
            keep = np.ones(layer.nnz, dtype=bool)
            size = layer.input_size * layer.size
        else:
            mask = layer.prune_mask if layer.prune_mask is not None else layer.weights != 0
            keep = to_host(mask)
            size = keep.size
        density = keep.sum() / size
        values = init.normal(self.rng, keep.shape, std, self.dtype, mean=density * std) * keep
        if layer.is_sparse:
            layer.values[...] = layer.backend.asarray(values)
        else:
            layer.set_parameters(values)
        layer.biases = np.full(layer.size, bias_constant, dtype=self.dtype)

    def load_weights(self, parameters):
        """Load a list of (weights, biases) pairs, one per layer, checking every shape first."""
        if len(parameters) != self.depth:
            raise ValueError(f"{self.depth} (weights, biases) pairs expected, got {len(parameters)}")
        for i, pair in enumerate(parameters):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ValueError(f"parameters[{i}] must be a (weights, biases) pair, got {type(pair).__name__}")
        saved = [(layer.values.copy(), layer.biases.copy()) if layer.has_parameters else None
                 for layer in self._layers]
        try:
            for layer, (weights, biases) in zip(self._layers, parameters):
                layer.set_parameters(weights, biases)
        except Exception:
            for layer, old in zip(self._layers, saved):  # leave the model as it was
                if old is not None and tuple(layer.values.shape) == tuple(old[0].shape):
                    layer.values[...] = old[0]
                    layer.biases = old[1]
            raise

    def initialize_sparse_weights(self, density, init_method="Xavier", bias_constant=0.0,
                                  distribution="uniform"):
        """Random sparse initialisation: each layer keeps round(density * size) random positions.

        ``density`` is in (0, 1], or a list with one density per layer.
        ``distribution='erdos_renyi'`` spreads a global density over the layers
        as SET does. ``init_method``: 'Xavier', 'Xavier_2' (the Xavier std
        divided by the density) or a float std. Sparse layers get a CSR
        pattern; dense layers get the same pattern as a prune mask. The new
        pattern replaces any earlier one (a second call gives the density asked for).
        """
        shapes = [(layer.input_size, layer.size) for layer in self._layers]
        densities = init.layer_densities(density, shapes, distribution)
        stds = [init.weight_std(init_method, n_in, n_out, d) for (n_in, n_out), d in zip(shapes, densities)]
        if not isinstance(bias_constant, numbers.Real):
            raise ValueError(f"bias_constant must be a number, got {bias_constant!r}")
        for layer, (n_in, n_out), d, std in zip(self._layers, shapes, densities, stds):
            positions = init.random_pattern(self.rng, n_out, n_in, d)
            rows, cols = np.divmod(positions, n_in)
            values = init.normal(self.rng, positions.size, std, self.dtype)
            biases = np.full(n_out, bias_constant, dtype=self.dtype)
            if layer.is_sparse:
                matrix = scipy.sparse.csr_matrix((values, (rows, cols)), shape=(n_out, n_in))
                layer.set_parameters(matrix, biases)
            else:
                weights = np.zeros((n_in, n_out), dtype=self.dtype)
                weights[cols, rows] = values
                mask = np.zeros((n_in, n_out), dtype=bool)
                mask[cols, rows] = True
                layer.prune_mask = None  # the new pattern replaces any earlier mask
                layer.set_parameters(weights, biases)
                layer.prune_mask = mask
        return densities

    # -------------------------------------------------------------- conversions
    def convert_comp_type(self, comp_type=None):
        """Move every array to the other backend (or to ``comp_type``) and switch the model to it.

        Every layer's ``version`` changes, so a live optimizer moves its state
        (moments, velocities) to the new device at its next step, values kept.
        """
        target = {"CPU": "GPU", "GPU": "CPU"}[self.comp_type] if comp_type is None else comp_type
        backend = Backend(target, self.backend.dtype)
        for layer in self._layers:
            layer._move_to(backend) if layer.has_parameters else setattr(layer, "backend", backend)
        self.backend = backend
        return self.comp_type

    def convert_to_sparse(self, layers=None):
        """Replace dense layers by sparse ones holding only their non-zero weights.

        ``layers`` (indices) limits the conversion; the outputs do not change.
        """
        self._convert(layers, to_sparse=True)

    def convert_to_dense(self, layers=None):
        """Replace sparse layers by dense ones; the pattern becomes a prune mask, outputs do not change."""
        self._convert(layers, to_sparse=False)

    def _convert(self, indices, to_sparse):
        indices = range(self.depth) if indices is None else indices
        for i in indices:
            if not isinstance(i, numbers.Integral) or not -self.depth <= i < self.depth:
                raise ValueError(f"layer indices in [0, {self.depth}) expected, got {i!r}")
        for i in indices:
            layer = self._layers[i]
            if layer.is_sparse == to_sparse:
                continue
            layer._require_parameters()
            new = (SPARSE_LAYERS if to_sparse else DENSE_LAYERS)[layer.activation](size=layer.size)
            new._own_dropout = layer._own_dropout
            new.bind(self.backend, layer.input_size, self.rng, self._dropout, self._dropout_style)
            if to_sparse:
                new.set_parameters(scipy.sparse.csr_matrix(to_host(layer.weights).T), layer.biases)
            else:
                new.set_parameters(layer.dense_weights(), layer.biases)
                new.prune_mask = _dense_mask(layer, np.ones(layer.nnz, dtype=bool))
            if layer.training_mask is not None:
                new.training_mask = _values_mask(new, _dense_mask(layer, layer.training_mask))
            self._layers[i] = new

    # ----------------------------------------------------------------- surgery
    def remove_activations(self, verbose=False):
        """Remove hidden units with no incoming or no outgoing weights; return the new layer sizes.

        A unit with no inputs outputs the constant act(bias); its contribution
        act(b) * W_next[unit, :] is folded into the next layer's biases, so the
        outputs do not change. Units with no outputs contribute nothing. Works
        on dense and sparse layers (ReLU or linear hidden layers).
        """
        for i in range(self.depth - 1):
            layer, nxt = self._layers[i], self._layers[i + 1]
            if layer.activation == "softmax":
                raise ValueError(f"layer {i} is a softmax layer: its units cannot be removed one by one")
            w_in, w_out = _host_matrix(layer), _host_matrix(nxt)
            incoming = np.asarray(abs(w_in).sum(axis=0)).ravel()
            outgoing = np.asarray(abs(w_out).sum(axis=1)).ravel()
            live = (incoming > 0) & (outgoing > 0)
            if live.all():
                continue
            if not live.any():
                raise ValueError(f"every unit of layer {i} is dead; removing them would disconnect the model")
            biases = to_host(layer.biases)
            no_inputs = (incoming == 0) & (outgoing > 0)
            constant = biases[no_inputs]
            if layer.activation == "relu":
                constant = np.maximum(constant, 0)
            folded = np.asarray(w_out[no_inputs].T @ constant).ravel() if no_inputs.any() else 0.0
            _slice_units(layer, columns=live)
            _slice_units(nxt, rows=live)
            nxt.biases = to_host(nxt.biases) + folded
        if verbose:
            print("Layer sizes:", self.sizes)
        return self.sizes

    def parameter_count(self, nonzero=False):
        """Stored weights plus biases (``nonzero=True`` counts only non-zero weights)."""
        total = 0
        for layer in self._layers:
            layer._require_parameters()
            total += int((layer.values != 0).sum()) if nonzero else layer.nnz
            total += layer.size
        return total


def _host_matrix(layer):
    """The layer's weights as an (n_in, n_out) host matrix: NumPy for dense, SciPy CSC for sparse."""
    if layer.is_sparse:
        return layer.to_scipy().T.tocsc()
    return to_host(layer.weights)


def _dense_mask(layer, mask):
    """A boolean (n_in, n_out) host matrix from a mask of the layer's ``values`` shape."""
    dense = np.zeros((layer.input_size, layer.size), dtype=bool)
    dense.reshape(-1)[layer.value_keys()] = to_host(mask).reshape(-1)
    return dense


def _values_mask(layer, dense):
    """The layer's ``values``-shaped mask read from a boolean (n_in, n_out) matrix."""
    return dense.reshape(-1)[layer.value_keys()].reshape(tuple(layer.values.shape))


def _slice_units(layer, rows=slice(None), columns=slice(None)):
    """Keep only the given input rows / unit columns of a layer, with its biases and masks."""
    masks = [None if m is None else _dense_mask(layer, m)[rows][:, columns]
             for m in (layer.prune_mask, layer.training_mask)]
    weights = _host_matrix(layer)[rows][:, columns]
    biases = to_host(layer.biases)[columns]
    layer._size = layer.input_size = None
    if layer.is_sparse:
        layer.set_parameters(scipy.sparse.csr_matrix(weights.T), biases)
    else:
        layer._prune_mask = layer._training_mask = None
        layer.set_parameters(weights, biases)
        layer.prune_mask = masks[0]
    layer.training_mask = None if masks[1] is None else _values_mask(layer, masks[1])
    layer._clear_cache()
