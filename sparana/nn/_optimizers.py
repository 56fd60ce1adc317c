"""Optimizers: SGD (with momentum), Adam, madadad and adadad, and selected training.

Each optimizer's update rule is written once, for one entry, in :mod:`sparana.kernels.rules`; an
optimizer turns its hyper-parameters into the rule's frozen record of scalars at every step and
hands it to its backend's kernels (Numba loops on the CPU, fused CuPy kernels on the GPU).

Every optimizer updates only the entries it may train:

* pruned weights of a dense layer (its ``prune_mask``) never move, so they stay zero;
* a sparse layer's pattern does not change in a step: only its stored values are updated. When
  pruning or rewiring changes it between steps, the state of the entries kept follows them (through
  the layer's lineage, or by position), dropped entries lose theirs and new ones start at zero;
* with ``selected=True`` (``SelectedAdamOptimizer``, ``SelectedSGDOptimizer``) only the weights
  under each layer's ``training_mask`` move, bit for bit, and the optimizer state (moments,
  velocities) exists only for those weights.

Regularisation: ``l1_constant`` and ``l2_constant`` add l1*sum|W| + l2/2*sum W^2 to the loss
(``regularization='coupled'``, the default; biases are not penalised), or, with
``regularization='original'``, apply a decoupled decay W -= lr * (l2/B * W + l1/B * sign(W))
after each step (B the batch size, lr the base rate even inside Adam); Adam, madadad and adadad
decay the biases the same way, SGD does not. ``clip`` clips the data gradient element-wise to
[-clip, clip].

``loss`` and ``reduction`` choose the loss and how it combines a batch ('mean' or 'sum'; None:
the loss's usual one), see :mod:`._losses`.
"""

from __future__ import annotations

import math
import weakref

import numpy as np

from .._backend import to_host
from .._checks import check_positive, check_ratio
from ..kernels import rules
from ._fused import compiled_step
from ._keys import locate
from ._losses import resolve_loss, resolve_reduction

REGULARIZATIONS = ("coupled", "original")


class _Slot:
    """Optimizer state of one parameter array: which entries train, and per-entry state."""

    def __init__(self, layer, version, shape, keys, index, state, serial=None):
        self.layer = layer
        self.version = version
        self.serial = serial  # the sparse layer's pattern the weights' state belongs to (see nn._sparse)
        self.shape = shape
        self.keys = keys
        self.index = index
        self.state = state


def _follow(old, layer, index, keys, array):
    """State ``array`` of slot ``old`` for ``layer``'s current entries: through the layer's lineage when
    both index all entries of a sparse layer (no key search), else matched by position (keys)."""
    if old.layer is layer and old.index is None and index is None and old.serial is not None:
        carried = layer.carry(array, old.serial)
        if carried is not None:
            return layer.backend.asarray(carried)  # (the layer may have moved to another device)
    return _remap(old.keys, array, keys, layer.backend)


def _remap(old_keys, old_values, new_keys, backend):
    """State for ``new_keys`` on ``backend``'s device, taken from the entries of ``old_keys`` where they
    match, zero elsewhere. The keys are host arrays; ``old_values`` may be on either device."""
    old_values = backend.asarray(old_values)
    if np.array_equal(old_keys, new_keys):  # the same entries (e.g. the layer moved to another device)
        return old_values
    positions, found = locate(old_keys, new_keys)
    result = backend.zeros(new_keys.size, dtype=old_values.dtype)
    result[backend.asarray(np.flatnonzero(found))] = old_values[backend.asarray(positions[found])]
    return result


class Optimizer:
    """Shared training loop; a subclass names its rule and state, and builds the rule's record."""

    rule = None  # the element-wise rule (sparana.kernels.rules) of the subclass
    state_names = ()
    # Whether regularization='original' decays the biases too (Adam, madadad and adadad do).
    decays_biases = True
    # Whether a step may take the compiled path where it applies (see sparana.nn._fused); False
    # (on the class or one optimizer) keeps every step on the layer-by-layer path.
    compiled = True

    def __init__(self, model, learning_rate, l1_constant=None, l2_constant=None, loss="cross_entropy",
                 regularization="coupled", clip=None, backward_layers=None, selected=False,
                 train_final_layer=False, train_biases=True, bitmasks=None, reduction=None):
        self.model = model
        self.learning_rate = check_positive("learning_rate", learning_rate)
        self.l1 = 0.0 if l1_constant is None else check_positive("l1_constant", l1_constant, allow_zero=True)
        self.l2 = 0.0 if l2_constant is None else check_positive("l2_constant", l2_constant, allow_zero=True)
        self.loss = resolve_loss(loss)
        self.reduction = resolve_reduction(self.loss, reduction)
        if regularization not in REGULARIZATIONS:
            raise ValueError(f"regularization must be one of {REGULARIZATIONS}, got {regularization!r}")
        self.regularization = regularization
        self.clip = 0.0 if clip is None else check_positive("clip", clip)
        if train_final_layer and backward_layers is None:
            backward_layers = 1
        model._first_trained(backward_layers)  # validates
        self.backward_layers = backward_layers
        self.selected = bool(selected)
        self.train_final_layer = bool(train_final_layer)
        self.train_biases = bool(train_biases)
        if bitmasks is not None and len(bitmasks) != model.depth:
            raise ValueError(f"bitmasks must hold one mask (or None) per layer ({model.depth}), got {len(bitmasks)}")
        self.bitmasks = bitmasks
        self.steps = 0
        self._slots = {}
        self._compiled_plan = None  # (sparana.nn._fused)
        self.last_batch = None  # (inputs, labels) of the last step: RigL's rewiring reads its gradient
        registry = getattr(model, "_optimizers", None)
        if isinstance(registry, weakref.WeakSet):
            registry.add(self)  # so that a Rewirer finds the optimizers of its model

    # ------------------------------------------------------------------ public
    def train_step(self, inputs, labels):
        """One step on a batch; returns the batch loss (without the regularisation penalty)."""
        value = compiled_step(self, inputs, labels)
        if value is not None:
            return value
        model = self.model
        self.last_batch = (inputs, labels)
        value = model.backprop(inputs, labels, self.loss, self.backward_layers, self.reduction)
        batch = np.shape(inputs)[0] if np.ndim(inputs) == 2 else 1
        self.steps += 1
        weight_terms, bias_terms = self._terms(batch)
        weight_step, bias_step = self._record(weight_terms), self._record(bias_terms)
        for i in range(model._first_trained(self.backward_layers), model.depth):
            layer = model.layers[i]
            self._update(layer.values.reshape(-1), layer.grad_weights.reshape(-1), self._slot(i, layer, "weights"),
                         weight_step)
            if self.train_biases:
                self._update(layer.biases, layer.grad_biases, self._slot(i, layer, "biases"), bias_step)
        return value

    def _terms(self, batch):
        """This step's terms (see sparana.kernels.rules.Terms) for the weights and for the biases."""
        clip = self.clip or None
        if self.regularization == "coupled":
            return dict(clip=clip, l1=self.l1, l2=self.l2), dict(clip=clip)
        decay = dict(clip=clip, decay1=self.learning_rate * self.l1 / batch, decay2=self.learning_rate * self.l2 / batch)
        return decay, (decay if self.decays_biases else dict(clip=clip))

    def sync(self):
        """Bring the state of every trained layer to its current entries now (pruning or rewiring
        changed them): kept entries keep their state, dropped ones lose it, new ones start at zero.
        A step does this by itself; ``state_dict`` after ``sync`` holds the new pattern's state."""
        for i, kind in list(self._slots):
            self._slot(i, self.model.layers[i], kind)

    def get_gradients(self, inputs, labels):
        """[(dL/dW, dL/db), ...] on a batch, with this optimizer's loss and penalties."""
        l1, l2 = (self.l1, self.l2) if self.regularization == "coupled" else (0.0, 0.0)
        return self.model.gradients(inputs, labels, self.loss, l1, l2, self.reduction)

    def state_arrays(self):
        """{(layer index, 'weights'|'biases', state name): host array}, plus the step counter."""
        result = {}
        for (i, kind), slot in self._slots.items():
            for name, array in slot.state.items():
                result[(i, kind, name)] = to_host(array, copy=True)
        return result

    def state_dict(self):
        """The optimizer's state as plain data: {'class', 'steps', 'slots': {(layer, kind): {...}}}.

        Each slot holds host copies: ``keys`` (positions of the trained entries in
        the dense (n_in, n_out) matrix), ``shape`` and one array per state name.
        Hyper-parameters are not included: they belong to the constructor.
        """
        slots = {}
        for (i, kind), slot in self._slots.items():
            entry = {"keys": np.array(slot.keys), "shape": slot.shape}
            entry.update({name: to_host(array, copy=True) for name, array in slot.state.items()})
            slots[(i, kind)] = entry
        return {"class": type(self).__name__, "steps": self.steps, "slots": slots}

    def load_state_dict(self, state):
        """Restore :meth:`state_dict` output; entries are matched to the model's layers by position."""
        if state.get("class") != type(self).__name__:
            raise ValueError(f"state of a {type(self).__name__} expected, got one of {state.get('class')!r}")
        slots = {}
        for (i, kind), entry in state["slots"].items():
            if not 0 <= i < self.model.depth or kind not in ("weights", "biases"):
                raise ValueError(f"optimizer state for layer {i} ({kind}) does not fit a model of depth "
                                 f"{self.model.depth}")
            layer = self.model.layers[i]
            names = set(entry) - {"keys", "shape"}
            if names != set(self._state_names()):
                raise ValueError(f"optimizer state names {sorted(self._state_names())} expected for layer {i}, "
                                 f"got {sorted(names)}")
            backend = layer.backend
            state_arrays = {name: backend.asarray(entry[name], dtype=backend.dtype, copy=True) for name in names}
            old = _Slot(None, -1, tuple(entry["shape"]), np.asarray(entry["keys"]), None, state_arrays)
            slots[(i, kind)] = old
        self._slots = slots
        self.steps = int(state["steps"])
        for (i, kind) in list(slots):  # re-derive indices; keys are matched to the current pattern
            self._slot(i, self.model.layers[i], kind)

    # --------------------------------------------------------------- internals
    def _trained_mask(self, i, layer):
        """Boolean mask of the entries of ``layer.values`` this optimizer trains, or None for all."""
        mask = layer.prune_mask
        if self.bitmasks is not None and self.bitmasks[i] is not None:
            bitmask = layer._as_mask(self.bitmasks[i], f"bitmasks[{i}]")
            mask = bitmask if mask is None else mask & bitmask
        final_free = self.train_final_layer and i == self.model.depth - 1
        if self.selected and not final_free:
            if layer.training_mask is None:
                raise ValueError(f"layer {i} has no training mask: set one (e.g. with parameter_selector) "
                                 f"or leave the layer out with backward_layers")
            mask = layer.training_mask if mask is None else mask & layer.training_mask
        return mask

    def _slot(self, i, layer, kind):
        old = self._slots.get((i, kind))
        if old is not None and old.layer is layer and old.version == layer.version:
            return old
        xp = layer.backend.xp
        shape = (layer.input_size, layer.size)
        if kind == "weights":
            mask = self._trained_mask(i, layer)
            index = None if mask is None else xp.flatnonzero(mask.reshape(-1))
            keys = layer.value_keys()
            if index is not None:
                keys = keys[to_host(index)]
        else:
            index, keys = None, np.arange(layer.size)
        size = keys.size
        if old is not None and old.shape == shape:
            state = {name: _follow(old, layer, index, keys, array) for name, array in old.state.items()}
        else:
            state = {name: xp.zeros(size, dtype=layer.backend.dtype) for name in self._state_names()}
        serial = getattr(layer, "pattern_serial", None) if kind == "weights" else None
        slot = _Slot(layer, layer.version, shape, keys, index, state, serial)
        self._slots[(i, kind)] = slot
        return slot

    def _state_names(self):
        return self.state_names

    def _record(self, terms):
        """The rule's frozen record of scalars for this step, from the ``terms`` of Terms."""
        raise NotImplementedError

    def _update(self, w, g, slot, step):
        """Apply the rule with the record ``step`` to the flat parameter ``w`` (the entries of ``slot``)."""
        state = tuple(slot.state[name] for name in self._state_names())
        self.model.backend.kernels.rule_update(self.rule, w, g, state, slot.index, step)


class SGDOptimizer(Optimizer):
    """Stochastic gradient descent, with heavy-ball momentum when ``momentum`` > 0.

    velocity <- momentum * velocity + g;  W <- W - lr * velocity.
    """

    rule = staticmethod(rules.sgd)
    decays_biases = False

    def __init__(self, model, learning_rate, l1_constant=None, l2_constant=None, momentum=0.0, **options):
        super().__init__(model, learning_rate, l1_constant, l2_constant, **options)
        self.momentum = check_positive("momentum", momentum, allow_zero=True)
        if self.momentum >= 1:
            raise ValueError(f"momentum must be below 1, got {momentum!r}")

    def _state_names(self):
        return ("velocity",) if self.momentum else ()

    def _record(self, terms):
        return rules.SGDStep(learning_rate=self.learning_rate, momentum=self.momentum, **terms)

    def _update(self, w, g, slot, step):
        self.model.backend.kernels.sgd_update(w, g, slot.state.get("velocity"), slot.index, step,
                                              parallel=slot.layer.is_sparse)


class AdamOptimizer(Optimizer):
    """Adam (Kingma and Ba) with the bias correction folded into the step size.

    lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t), and epsilon is added to sqrt(v):
    W <- W - lr_t * m / (sqrt(v) + epsilon).
    """

    rule = staticmethod(rules.adam)
    state_names = ("m", "v")

    def __init__(self, model, learning_rate, beta1=0.9, beta2=0.999, epsilon=1e-8, l1_constant=None,
                 l2_constant=None, **options):
        super().__init__(model, learning_rate, l1_constant, l2_constant, **options)
        check_ratio("beta1", beta1, high=1.0)
        check_ratio("beta2", beta2, high=1.0)
        if beta1 >= 1 or beta2 >= 1:
            raise ValueError(f"beta1 and beta2 must be below 1, got {beta1!r} and {beta2!r}")
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.epsilon = check_positive("epsilon", epsilon)

    def _record(self, terms):
        t = self.steps
        step_size = self.learning_rate * math.sqrt(1 - self.beta2 ** t) / (1 - self.beta1 ** t)
        return rules.AdamStep(step_size=step_size, beta1=self.beta1, beta2=self.beta2, epsilon=self.epsilon, **terms)

    def _update(self, w, g, slot, step):
        self.model.backend.kernels.adam_update(w, g, slot.state["m"], slot.state["v"], slot.index, step,
                                               parallel=slot.layer.is_sparse)


def SelectedAdamOptimizer(model, learning_rate, beta1=0.9, beta2=0.999, epsilon=1e-8, l1_constant=None,
                          l2_constant=None, backward_layers=None, train_final_layer=False, **options):
    """Adam that trains only the weights under each layer's ``training_mask``.

    Only the last ``backward_layers`` layers are trained; ``train_final_layer`` trains the whole
    final layer without a mask (alone, unless ``backward_layers`` asks for more). Biases of the
    trained layers follow ``train_biases`` (default True).
    """
    return AdamOptimizer(model, learning_rate, beta1, beta2, epsilon, l1_constant, l2_constant,
                         backward_layers=backward_layers, train_final_layer=train_final_layer,
                         selected=True, **options)


def SelectedSGDOptimizer(model, learning_rate, l1_constant=None, l2_constant=None, momentum=0.0,
                         backward_layers=None, train_final_layer=False, **options):
    """SGD that trains only the weights under each layer's ``training_mask`` (see SelectedAdamOptimizer)."""
    return SGDOptimizer(model, learning_rate, l1_constant, l2_constant, momentum,
                        backward_layers=backward_layers, train_final_layer=train_final_layer,
                        selected=True, **options)


class _AcceleratingOptimizer(Optimizer):
    """What madadad and adadad share: an accumulator per entry, slowed by a ``friction`` in [0, 1]."""

    state_names = ("accumulator",)

    def __init__(self, model, learning_rate, friction, l1_constant=None, l2_constant=None, **options):
        super().__init__(model, learning_rate, l1_constant, l2_constant, **options)
        check_ratio("friction", friction)
        self.friction = float(friction)


class MadadadOptimizer(_AcceleratingOptimizer):
    """"Gradients that keep moving in the same direction move faster".

    Per entry, A counts (with friction f) the consecutive steps whose gradient had the same sign:
    A <- f*A*[sign(A) = sign(-g)] + sign(-g); the step is lr * g * |A|.
    """

    rule = staticmethod(rules.madadad)

    def _record(self, terms):
        return rules.MadadadStep(learning_rate=self.learning_rate, friction=self.friction, **terms)


class AdadadOptimizer(_AcceleratingOptimizer):
    """Element-wise heavy-ball momentum that resets on a change of direction.

    W <- W - lr * (g + momentum * A); then A is zeroed where g * A < -epsilon and A <- f*A + g.
    For the first 9 steps A stays zero (plain SGD). ``momentum`` defaults to 1.
    """

    rule = staticmethod(rules.adadad)

    def __init__(self, model, learning_rate, friction, momentum=None, l1_constant=None, l2_constant=None,
                 epsilon=1e-7, **options):
        super().__init__(model, learning_rate, friction, l1_constant, l2_constant, **options)
        self.momentum = 1.0 if momentum is None else check_positive("momentum", momentum, allow_zero=True)
        self.epsilon = check_positive("epsilon", epsilon, allow_zero=True)

    def _record(self, terms):
        return rules.AdadadStep(learning_rate=self.learning_rate, friction=self.friction, momentum=self.momentum,
                                epsilon=self.epsilon, warm=float(self.steps >= 10), **terms)
