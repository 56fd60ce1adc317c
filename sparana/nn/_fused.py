"""The compiled training step (:mod:`sparana.kernels.cpu_step`): when a step takes it, and its arrays.

A step of :class:`~sparana.AdamOptimizer` or :class:`~sparana.SGDOptimizer` takes it on the CPU
when the model is sparse ReLU layers (at most ``cpu_step.MAX_LAYERS``) under one dense head
(linear or softmax, at most :data:`HEAD_CLASSES` units) trained whole with the cross-entropy, and
nothing else asks for the layer-by-layer path: no dropout, no masks, no selection, inputs already
of the model's float type and class ids as labels. Anything else takes the layer-by-layer path,
which it matches to rounding (``tests/test_fused_step.py``).

The step leaves what the layer-by-layer path leaves for the next caller: every layer's gradients
and the optimizer's state, through the optimizer's own slots. (Not the layers' activations, which
are the column groups': a layer's backward pass needs a forward pass of its own first.)
"""

from __future__ import annotations

import numpy as np

from ._losses import resolve_reduction

# Units of a dense head that the compiled step computes itself (a classifier's; a larger dense
# layer is BLAS's work, on the layer-by-layer path).
HEAD_CLASSES = 64


def compiled_step(optimizer, inputs, labels):
    """Run ``optimizer``'s step on the batch as one compiled call and return its loss; None when this
    step cannot take that path (the caller takes the layer-by-layer one)."""
    model = optimizer.model
    if not _fits(optimizer, model) or not _plain_batch(model, inputs, labels):
        return None
    from ..kernels import cpu_step

    batch = inputs.shape[0]
    slots = [optimizer._slot(i, layer, kind) for i, layer in enumerate(model.layers) for kind in ("weights", "biases")]
    key = (batch, optimizer.train_biases, optimizer.reduction, *map(id, slots),
           *(part for layer in model.layers for part in _identity(layer)))
    plan = getattr(optimizer, "_compiled_plan", None)
    if plan is None or plan.key != key:
        plan = optimizer._compiled_plan = _Plan(key, optimizer, slots, batch)
    threads = min(plan.kernel.threads(batch * sum(layer.nnz for layer in model.layers[:-1])), plan.groups)
    optimizer.last_batch = (inputs, labels)
    optimizer.steps += 1
    dtype = model.backend.dtype
    weight_terms, bias_terms = optimizer._terms(batch)
    scalars = (optimizer._record(weight_terms).scalars(dtype), optimizer._record(bias_terms).scalars(dtype))
    ids = labels if labels.dtype == np.int64 else labels.astype(np.int64)
    # Always the parallel compile, on one thread where the machine or the work asks for one: a call a
    # step pays its few microseconds of launch once, and a second (plain) compile would cost seconds.
    threads = max(threads, 1)
    loss, error = plan.kernel.run(threads, inputs, *cpu_step.finite_check(inputs), ids, *plan.arrays, *scalars,
                                  optimizer.train_biases, threads)
    if error:
        optimizer.steps -= 1
        _raise_for(model, inputs, labels, error)
    for layer in model.layers:  # (its activations are the groups': a backward pass needs a forward one first)
        layer._inputs = layer._outputs = layer._dropout_mask = None
    return loss


def _identity(layer):
    """What a plan holds of ``layer``: when any of it changes, the plan is built again."""
    return (layer.version, id(layer.values), id(layer.biases), id(layer._buffers), id(layer.grad_weights),
            id(layer.grad_biases))


class _Plan:
    """The arrays of one optimizer's compiled step, for one batch size."""

    def __init__(self, key, optimizer, slots, batch):
        from ..kernels import cpu, cpu_step

        model = optimizer.model
        layers = model.layers
        sparse, head = layers[:-1], layers[-1]
        for layer in layers:
            _gradient_arrays(layer)
        starts, widths, width = cpu_step.column_groups(batch, model.backend.dtype)
        groups = starts.size

        def grouped(layer, name, rows):
            return layer._buffer(name, (groups, rows, width))

        acts = [grouped(sparse[0], "group inputs", sparse[0].input_size)]
        acts += [grouped(layer, "group outputs", layer.size) for layer in sparse]
        patterns = [layer.pattern for layer in sparse]
        self.groups = groups
        count = cpu_step.MAX_LAYERS

        def padded(arrays, length):
            """``arrays`` (a list) as a tuple of ``length``, padded with empty arrays of their kind: one
            compile of the step serves every depth."""
            empty = np.zeros((0,) * arrays[0].ndim, dtype=arrays[0].dtype)
            if arrays[0].ndim == 3:
                empty = np.zeros((groups, 0, width), dtype=arrays[0].dtype)
            return tuple(arrays) + (empty,) * (length - len(arrays))

        def per_layer(arrays):
            return padded(list(arrays), count)

        def with_head(arrays):
            return padded(list(arrays), count + 1)

        self.arrays = (
            starts, widths, float(batch if optimizer.reduction == "mean" else 1), head.act.probabilities, len(sparse),
            per_layer(p.indptr for p in patterns), per_layer(p.indices for p in patterns),
            per_layer(p.t_indptr for p in patterns), per_layer(p.t_indices for p in patterns),
            per_layer(p.perm for p in patterns), per_layer(layer.values for layer in sparse),
            per_layer(layer.biases for layer in sparse),
            tuple(cpu._often_picked(a[0], p.nnz) for a, p in zip(acts, patterns)) + (False,) * (count - len(sparse)),
            with_head(acts),
            per_layer(grouped(layer, "group input gradients", layer.input_size) for layer in layers[1:]),
            with_head(layer._buffer("group weight gradients", (groups, layer.values.size)) for layer in layers),
            with_head(layer._buffer("group bias gradients", (groups, layer.size)) for layer in layers),
            head.values, head.biases, grouped(head, "group outputs", head.size),
            grouped(head, "group loss gradients", head.size),
            with_head(layer.grad_weights.reshape(-1) for layer in layers),
            with_head(layer.grad_biases for layer in layers))
        states = [slot.state for slot in slots]
        if optimizer.state_names == ("m", "v"):  # (Adam; _fits admits SGD otherwise)
            self.kernel = cpu_step.ADAM_STEP
            self.arrays += (padded([s["m"] for s in states], 2 * count + 2),
                            padded([s["v"] for s in states], 2 * count + 2), False)
        else:
            self.kernel = cpu_step.SGD_STEP
            momentum = bool(optimizer.momentum)
            zero = np.zeros(1, model.backend.dtype)  # (the velocity of SGD without momentum, never written)
            velocity = padded([s["velocity"] if momentum else zero for s in states], 2 * count + 2)
            self.arrays += (velocity, velocity, momentum)
        self.key = key
        self.held = (slots, [layer._buffers for layer in layers])  # (alive while the key holds their ids)


def _fits(optimizer, model):
    """Whether the model and the optimizer's settings are the ones the compiled step computes."""
    from ._optimizers import AdamOptimizer, SGDOptimizer

    if not optimizer.compiled or type(optimizer) not in (AdamOptimizer, SGDOptimizer):
        return False
    if (model.backend.is_gpu or optimizer.loss != "cross_entropy" or optimizer.backward_layers is not None
            or optimizer.selected or optimizer.bitmasks is not None
            or resolve_reduction(optimizer.loss, optimizer.reduction) not in ("mean", "sum")):
        return False
    layers = model.layers
    if len(layers) < 2:
        return False
    head = layers[-1]
    if (head.is_sparse or head.activation not in ("linear", "softmax") or head.size > HEAD_CLASSES
            or head.prune_mask is not None):
        return False
    for layer in layers:
        if layer.dropout or layer.training_mask is not None:
            return False
    from ..kernels import cpu_step

    return len(layers) - 1 <= cpu_step.MAX_LAYERS and all(layer.is_sparse and layer.activation == "relu"
                                                          for layer in layers[:-1])


def _plain_batch(model, inputs, labels):
    """Whether the batch is (batch, inputs) values of the model's float type, C-ordered, with integer
    class ids: what the compiled step reads directly (it checks their values itself)."""
    if not isinstance(inputs, np.ndarray) or not isinstance(labels, np.ndarray):
        return False
    return (inputs.ndim == 2 and inputs.shape[0] > 0 and inputs.shape[1] == model.input_size
            and inputs.dtype == model.backend.dtype and inputs.flags.c_contiguous
            and labels.ndim == 1 and labels.shape[0] == inputs.shape[0] and labels.dtype.kind in "iu")


def _gradient_arrays(layer):
    """The layer's gradient arrays, as its backward pass allocates them."""
    if layer.grad_weights is None or layer.grad_weights.shape != layer.values.shape:
        layer.grad_weights = np.empty_like(layer.values)
    if layer.grad_biases is None or layer.grad_biases.shape != layer.biases.shape:
        layer.grad_biases = np.empty_like(layer.biases)


def _raise_for(model, inputs, labels, error):
    """Raise the layer-by-layer path's error for a batch the compiled step refused."""
    from ..kernels import cpu_step

    if error == cpu_step.BAD_INPUT:
        model._inputs(inputs)
    else:
        model.targets(labels, inputs.shape[0])
    raise ValueError("the batch was refused (non-finite inputs or class ids out of range)")
