"""The Vulcanizer: split submodels off a model, train them apart, and meld them back.

A submodel is a real :class:`~sparana.Model` made of chosen units of the last layers of the main
model (:mod:`._split`). It takes ``main.partial_outputs(x, start)`` as its input (the main
model's first ``start`` layers stay where they are) and keeps all of the final layer's outputs.
Putting its trained weights back into the main model is the "mind meld".

The consolidation weights are not part of the main model: train a submodel, call
:meth:`Vulcanizer.revert_weights` after every step to put them back to their split-time values
(so that only real units learn), and meld. :meth:`Vulcanizer.mind_meld` writes the values a
submodel owns (see :mod:`._plan`) back and leaves every other weight bit for bit unchanged; a
parameter owned by several of the submodels melded together (the final biases, or overlapping
units of separate ``split_model`` calls) gets the mean of their values.
"""

from __future__ import annotations

import numpy as np

from .._backend import to_host
from .._checks import check_std, is_integer
from ..nn._model import Model
from ..sparsity._columns import SELECTION_TYPES, choose_columns
from ..sparsity._statistics import StatisticsMixin
from ._plan import assign
from ._split import CONSOLIDATIONS, build, candidate_weights


class Vulcanizer(StatisticsMixin):
    """Split submodels off ``model``, train them, and meld them back (see the module docstring).

    ``selection_type`` chooses the units a submodel keeps: 'max' (the units
    owning the largest weights), 'normal' (random, biased towards them, with
    spread ``std``, a fraction of the number of weights) or 'random'
    (uniform). ``seed`` (an int, a SeedSequence or a Generator) drives the
    random choices and the submodels' own seeds.
    """

    def __init__(self, model, selection_type="max", std=None, seed=None):
        if not isinstance(model, Model):
            raise TypeError(f"a sparana Model expected, got {type(model).__name__}")
        if selection_type not in SELECTION_TYPES:
            raise ValueError(f"selection_type must be one of {SELECTION_TYPES}, got {selection_type!r}")
        if selection_type == "normal":
            if std is None:
                raise ValueError("selection_type='normal' needs std (the spread, a fraction of the number of weights)")
            std = check_std(std)
        self.model = model
        self.statistics = None
        self.selection_type = selection_type
        self.std = std
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.average_zeros = None
        self.mean_activations = None
        self.submodels = []
        self.plans = []

    # -------------------------------------------------------------- statistics
    def get_average_zeros(self, inputs, batch_size=4096):
        """Per layer, the fraction of its outputs that are zero on ``inputs``; returns the list.

        The same pass records each unit's mean activation (``mean_activations``),
        which ``consolidation='mean'`` needs. A new call replaces both.
        """
        data = to_host(inputs)
        if getattr(data, "ndim", 0) == 1:
            data = data.reshape(1, -1)
        if getattr(data, "ndim", 0) != 2 or data.shape[0] == 0:
            raise ValueError(f"a non-empty (samples, {self.model.input_size}) batch expected, "
                             f"got shape {getattr(data, 'shape', None)}")
        sizes = self.model.sizes[1:]
        zeros = np.zeros(len(sizes))
        sums = [np.zeros(n) for n in sizes]
        for begin in range(0, data.shape[0], batch_size):
            for i, a in enumerate(self.model.activations(data[begin:begin + batch_size])[1:]):
                a = to_host(a)
                zeros[i] += np.count_nonzero(a == 0)
                sums[i] += a.sum(axis=0, dtype=np.float64)
        count = data.shape[0]
        self.average_zeros = [float(z / (count * n)) for z, n in zip(zeros, sizes)]
        self.mean_activations = [s / count for s in sums]
        return list(self.average_zeros)

    # ------------------------------------------------------------------ splits
    def split_model(self, sizes, consolidation="original", data=None):
        """A submodel of the last ``len(sizes)`` layers, with ``sizes[i]`` units kept in each.

        ``sizes`` lists the units kept per layer, e.g. [50, 50, 10] for the
        last three layers (each split layer gets one consolidation unit on
        top); the last entry must be the number of classes.
        Units are chosen by the vulcanizer's ``selection_type`` (layer by
        layer, on the weights into the units kept before). ``data`` (optional)
        is passed to :meth:`get_average_zeros` first. Returns the submodel;
        its input is ``main.partial_outputs(x, depth - len(sizes))``.
        """
        model = self.model
        self._check_sizes(sizes)
        start = model.depth - len(sizes)
        self._prepare(start, consolidation, data)
        chosen = []
        for i, size in enumerate(sizes[:-1]):
            rows = None if i == 0 else chosen[-1]
            weights = candidate_weights(model.layers[start + i], rows)
            chosen.append(np.sort(choose_columns(weights, size, self.selection_type, self.std, self.rng)))
        return self._add(start, chosen, consolidation)

    def _check_sizes(self, sizes):
        model = self.model
        if not isinstance(sizes, (list, tuple)) or not all(is_integer(s) for s in sizes):
            raise ValueError(f"sizes must be a list of integers (the submodel's layer sizes), got {sizes!r}")
        if not 2 <= len(sizes) <= model.depth:
            raise ValueError(f"sizes must cover 2 to {model.depth} layers (the last one being the "
                             f"{model.num_classes} outputs), got {len(sizes)}: {list(sizes)}")
        if sizes[-1] != model.num_classes:
            raise ValueError(f"the last size must be the number of outputs, {model.num_classes} "
                             f"(the final layer keeps all of them), got {sizes[-1]}")
        start = model.depth - len(sizes)
        for i, size in enumerate(sizes[:-1]):
            available = model.layers[start + i].size
            if not 1 <= size <= available:
                raise ValueError(f"size {size} for main layer {start + i} must be in [1, {available}] "
                                 f"(the layer has {available} units)")

    def split_models(self, k, depth=None, consolidation="original", data=None, sizes=None):
        """``k`` submodels of the last ``depth`` layers (default: all) over disjoint units covering each layer.

        ``sizes`` (optional, as for :meth:`split_model`: units per layer, the
        last being the number of classes) sets ``depth`` and keeps only the
        first ``sizes[i]`` units of each submodel's share of layer i; then
        k * sizes[i] must not exceed the layer's units (the shares stay
        disjoint, and may leave units out).

        Every split hidden layer is ranked once on all its weights by the
        vulcanizer's ``selection_type`` (for 'random', a random permutation)
        and dealt round-robin: submodel s gets the units ranked s, s + k,
        s + 2k, ... (so each gets a share of the strongest ones). The main
        model's first ``model.depth - depth`` layers are not split: they
        compute the submodels' inputs. Returns the list of submodels.
        """
        model = self.model
        start = self.check_split(k, depth, sizes)
        self._prepare(start, consolidation, data)
        parts = []
        for i in range(model.depth - start - 1):
            layer = model.layers[start + i]
            order = choose_columns(candidate_weights(layer, None), layer.size, self.selection_type, self.std,
                                   self.rng)
            keep = None if sizes is None else sizes[i]
            parts.append([np.sort(order[s::k][:keep]) for s in range(k)])
        return [self._add(start, [p[s] for p in parts], consolidation) for s in range(k)]

    def check_split(self, k, depth=None, sizes=None):
        """Raise unless :meth:`split_models` can make ``k`` submodels of ``depth`` layers (or ``sizes``);
        return the index of the first split layer."""
        model = self.model
        if sizes is not None:
            self._check_sizes(sizes)
            depth = len(sizes)
        depth = model.depth if depth is None else depth
        if not is_integer(depth, 2, model.depth):
            raise ValueError(f"depth must be an integer in [2, {model.depth}] (layers the submodels span), "
                             f"got {depth!r}")
        if not is_integer(k, 1):
            raise ValueError(f"k must be a positive integer (the number of submodels), got {k!r}")
        start = model.depth - depth
        for i in range(depth - 1):
            units = model.layers[start + i].size
            need = k * (1 if sizes is None else sizes[i])
            if need > units:
                raise ValueError(f"k = {k} disjoint submodels need {need} units in main layer {start + i}, "
                                 f"which has {units}")
        return start

    def _prepare(self, start, consolidation, data):
        """Validate what every split needs before choosing anything."""
        if consolidation not in CONSOLIDATIONS:
            raise ValueError(f"consolidation must be one of {CONSOLIDATIONS}, got {consolidation!r}")
        for i, layer in enumerate(self.model.layers[start:-1], start):
            layer._require_parameters()
            if not layer.act.per_unit:
                raise ValueError(f"main layer {i} is a {layer.activation} layer: its units cannot be split apart")
        self.model.layers[-1]._require_parameters()
        if data is not None:
            self.get_average_zeros(data)
        if consolidation == "mean" and self.mean_activations is None:
            raise ValueError("consolidation='mean' needs the units' mean activations: call "
                             "get_average_zeros(inputs) first or pass data=... (or use consolidation="
                             "'original' or 'none')")

    def _add(self, start, chosen, consolidation):
        submodel, plan = build(self.model, start, chosen, consolidation, self._zero_fraction,
                                self.mean_activations, int(self.rng.integers(2**63)))
        self.submodels.append(submodel)
        self.plans.append(plan)
        return submodel

    def _zero_fraction(self, index):
        return 1.0 if self.average_zeros is None else self.average_zeros[index]

    # ----------------------------------------------------------------- lookups
    def _indices(self, submodels):
        """Record indices of ``submodels``: None (all), a submodel, an index, or a list of them."""
        if submodels is None:
            return list(range(len(self.plans)))
        items = list(submodels) if isinstance(submodels, (list, tuple)) else [submodels]
        indices = []
        for item in items:
            if isinstance(item, Model):
                found = [t for t, s in enumerate(self.submodels) if s is item]
                if not found:
                    raise ValueError("this submodel was not split off by this vulcanizer (or was discarded)")
                indices.append(found[0])
            elif is_integer(item, 0, len(self.plans) - 1):
                indices.append(int(item))
            else:
                raise ValueError(f"a submodel of this vulcanizer or an index in [0, {len(self.plans)}) "
                                 f"expected, got {item!r}")
        if len(set(indices)) != len(indices):
            raise ValueError("the same submodel was given more than once")
        return indices

    def plan(self, submodel):
        """The :class:`SubmodelPlan` of a submodel (or of its index)."""
        return self.plans[self._indices(submodel)[0]]

    def chosen_units(self, submodel):
        """The unit indices a submodel kept, one sorted int64 array per split main layer."""
        return self.plan(submodel).chosen

    def submodel_inputs(self, submodel, inputs):
        """The submodel's input for main-model ``inputs``: ``main.partial_outputs(inputs, start)``."""
        return self.model.partial_outputs(inputs, self.plan(submodel).start)

    def discard(self, submodels=None):
        """Forget submodels (all by default): they can no longer be reverted or melded."""
        drop = set(self._indices(submodels))
        self.submodels = [s for t, s in enumerate(self.submodels) if t not in drop]
        self.plans = [p for t, p in enumerate(self.plans) if t not in drop]

    # ---------------------------------------------------------- train and meld
    def revert_weights(self, submodel=None):
        """Put the consolidation weights back to their split-time values (all submodels by default)."""
        for t in self._indices(submodel):
            self.plans[t].revert(self.submodels[t])

    def mind_meld(self, submodels=None, parameters=None):
        """Write the submodels' weights and biases of their chosen units back into the main model.

        ``submodels``: None (every submodel of this vulcanizer), a submodel,
        its index, or a list of them. ``parameters`` (optional): for each of
        them, its trained parameters as a list of (values, biases) pairs, one
        per layer, ``values`` shaped like the layer's ``values`` (e.g. trained
        elsewhere and sent back); by default the live submodels are read.
        Every other weight of the main model is left bit for bit unchanged;
        parameters owned by several of the submodels get the mean of their
        values. Everything is checked before anything is written.
        """
        indices = self._indices(submodels)
        if not indices:
            raise ValueError("nothing to meld: split a submodel off first (split_model or split_models)")
        if parameters is None:
            for t in indices:
                self.plans[t].check_submodel(self.submodels[t])
            parameters = [[(to_host(layer.values), to_host(layer.biases)) for layer in self.submodels[t].layers]
                          for t in indices]
        elif not isinstance(parameters, (list, tuple)) or len(parameters) != len(indices):
            given = len(parameters) if isinstance(parameters, (list, tuple)) else type(parameters).__name__
            raise ValueError(f"parameters: one list of (values, biases) pairs per submodel ({len(indices)}) "
                             f"expected, got {given}")
        plans = [self.plans[t] for t in indices]
        for n, (plan, params) in enumerate(zip(plans, parameters)):
            plan.check_parameters(params, f"parameters[{n}]")
            plan.check_main(self.model)
        for index, layer in enumerate(self.model.layers):
            weights, biases = [], []
            for plan, params in zip(plans, parameters):
                i = index - plan.start
                if i < 0:
                    continue
                values, bias = (np.asarray(to_host(a)) for a in params[i])
                weights.append((plan.main_index[i], values.reshape(-1)[plan.sub_index[i]]))
                biases.append((plan.bias_units[i], bias[:plan.bias_units[i].size]))
            if weights:
                assign(layer.values, *_merge(weights))
                assign(layer.biases, *_merge(biases))
                if layer.prune_mask is not None:
                    layer.values[...] *= layer.prune_mask


def _merge(pieces):
    """(flat indices, values) from several (index, values) pieces: the mean where indices repeat."""
    index = np.concatenate([p[0] for p in pieces])
    values = np.concatenate([p[1] for p in pieces])
    if index.size == 0:
        return index, values
    counts = np.bincount(index)
    if counts.max() <= 1:
        return index, values  # disjoint: the values themselves, bit for bit
    sums = np.bincount(index, weights=values.astype(np.float64), minlength=counts.size)
    touched = np.flatnonzero(counts)
    return touched, sums[touched] / counts[touched]
