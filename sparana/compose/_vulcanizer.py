"""The vulcanizer: split submodels off a model, train them apart, put them back (spec section 4.3).

A submodel is a real :class:`~sparana.Model` made of chosen units of the last
layers of the main model. It takes ``main.partial_outputs(x, start)`` as its
input (the main model's first ``start`` layers stay where they are) and keeps
all of the final layer's outputs. Putting its trained weights back into the
main model is the "mind meld" (the original's Star Trek joke).

Each split hidden layer keeps its chosen units plus, unless
``consolidation='none'``, one *consolidation unit* standing in for the units
left out, so that the submodel's outputs start close to the main model's:

* ``'original'`` (default): the original's design. Incoming column = z times
  the row-sum of the removed units' incoming weights, bias = z times the sum
  of their biases (the original forgot the bias), outgoing row = the mean of
  the removed units' outgoing rows; z is the layer's zero fraction from
  :meth:`Vulcanizer.get_average_zeros`, or 1.0 (the plain sums) when it has
  not been computed.
* ``'mean'``: a constant unit (no incoming weights, bias A = the summed mean
  activation of the removed units over the data given to
  :meth:`Vulcanizer.get_average_zeros`) whose outgoing row is the
  activation-weighted mean of the removed units' rows: it adds exactly the
  removed units' mean contribution to the next layer, the constant that
  minimises the mean squared error of the next layer's pre-activations.
* ``'none'``: no consolidation unit (the independent subnetworks of Yuan et
  al.'s IST).

Measured on the documentation model after one epoch on MNIST (test set,
see the report of jobs/vulcanize.py): 'mean' lowers the squared distance to
the main model's outputs by only 0-8% and lowers the submodel's starting
accuracy a lot (a constant shift of the logits biases the argmax, e.g. 90%
against 96% for sizes [400, 200, 10]), while 'original' starts as close as
'none' or closer (its unit is often inactive: the removed units' summed
pre-activation is mostly negative). So the original's design stays the
default; after training and melding all three end within 0.2% accuracy.

The consolidation weights are not part of the main model: train a submodel,
call :meth:`Vulcanizer.revert_weights` after every step to put them back to
their split-time values (so that only real units learn), and meld.

Ownership: weight W[start+i][j, k] (dense (n_in, n_out) orientation) belongs
to a submodel if unit k is one of its chosen units of main layer start+i (any
output for the final layer) and j is one of its chosen units of the previous
layer (any input for i = 0); the biases of its chosen units (all final biases)
too. :meth:`Vulcanizer.mind_meld` writes the owned values back and leaves
every other weight bit for bit unchanged. A parameter owned by several of the
submodels melded together (the final biases, or overlapping units of separate
``split_model`` calls) gets the mean of their values.

Dense main layers with a prune mask give submodels the sliced mask (the
consolidation weights are never pruned), sparse main layers give them the
sliced CSR pattern (the consolidation row and column are stored in full), and
a training mask is sliced as well (consolidation weights: not trained by the
selected optimizers). Pruned weights therefore stay pruned in the submodel and
after the meld.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import scipy.sparse

from .._backend import array_module, to_host
from ..sparsity._columns import SELECTION_TYPES, check_std, choose_columns
from ..nn._keys import host_matrix, locate, present_mask
from ..nn._model import Model
from ..sparsity._statistics import StatisticsMixin

CONSOLIDATIONS = ("mean", "original", "none")


@dataclass(eq=False)
class SubmodelPlan:
    """What melding and reverting one submodel needs, as plain NumPy arrays (picklable: it can travel).

    Per submodel layer i (main layer ``start + i``):

    * ``sub_index[i]`` / ``main_index[i]``: flat indices into the submodel
      layer's ``values`` and the matching flat indices into the main layer's
      ``values`` of the weights the submodel owns;
    * ``bias_units[i]``: the main units whose biases it owns (their biases are
      the first entries of the submodel layer's biases);
    * ``fixed_index[i]`` / ``fixed_values[i]`` / ``fixed_biases[i]``: the
      consolidation weights (flat indices into ``values``), their split-time
      values and the consolidation unit's bias (None without one);
    * ``value_shapes[i]``, ``sizes[i]`` (units), ``sub_keys[i]`` (a sparse
      layer's ``value_keys()``, None for dense) and ``main_shapes[i]`` /
      ``main_keys[i]``, to refuse a
      submodel or a main model whose layers changed since the split.

    ``chosen[i]`` are the sorted unit indices kept of main layer ``start + i``
    for every split hidden layer (all but the final one).
    """

    start: int
    chosen: list
    consolidation: str
    sub_index: list
    main_index: list
    bias_units: list
    fixed_index: list
    fixed_values: list
    fixed_biases: list
    value_shapes: list
    sizes: list
    sub_keys: list
    main_shapes: list
    main_keys: list

    @property
    def depth(self):
        return len(self.value_shapes)

    def revert(self, submodel):
        """Restore the submodel's consolidation weights and biases to their split-time values."""
        self.check_submodel(submodel)
        for layer, index, values, bias in zip(submodel.layers, self.fixed_index, self.fixed_values,
                                              self.fixed_biases):
            if index.size:
                _assign(layer.values, index, values)
            if bias is not None:
                layer.biases[-1] = bias

    def check_submodel(self, submodel):
        """Raise unless ``submodel``'s layers still have their split-time shapes and patterns."""
        if not isinstance(submodel, Model) or submodel.depth != self.depth:
            raise ValueError(f"a submodel with {self.depth} layers expected, got {submodel!r}")
        for i, (layer, keys) in enumerate(zip(submodel.layers, self.sub_keys)):
            if (keys is None) == layer.is_sparse or tuple(layer.values.shape) != self.value_shapes[i] or (
                    keys is not None and not np.array_equal(layer.value_keys(), keys)):
                raise ValueError(f"submodel layer {i} changed since the split (values of shape "
                                 f"{self.value_shapes[i]} expected, got {tuple(layer.values.shape)}, or another "
                                 "sparse pattern): it cannot be melded or reverted")

    def check_parameters(self, parameters, name="parameters"):
        """Raise unless ``parameters`` is one finite (values, biases) pair per submodel layer, of the right shapes."""
        if not isinstance(parameters, (list, tuple)) or len(parameters) != self.depth:
            given = len(parameters) if isinstance(parameters, (list, tuple)) else type(parameters).__name__
            raise ValueError(f"{name}: {self.depth} (values, biases) pairs expected, got {given}")
        for i, pair in enumerate(parameters):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ValueError(f"{name}[{i}] must be a (values, biases) pair, got {type(pair).__name__}")
            values, biases = (np.asarray(to_host(a)) for a in pair)
            if values.shape != self.value_shapes[i]:
                raise ValueError(f"{name}[{i}]: values of shape {self.value_shapes[i]} expected (the submodel "
                                 f"layer's ``values``), got {values.shape}")
            if biases.shape != (self.sizes[i],):
                raise ValueError(f"{name}[{i}]: biases of shape ({self.sizes[i]},) expected, got {biases.shape}")
            if not (np.isfinite(values).all() and np.isfinite(biases).all()):
                raise ValueError(f"{name}[{i}] holds NaN or infinite values; they would corrupt the main model")

    def check_main(self, model):
        """Raise unless the main model's layers from ``start`` on are as they were at the split."""
        if not isinstance(model, Model) or model.depth != self.start + self.depth:
            raise ValueError(f"the main model changed since the split: {self.start + self.depth} layers expected")
        for i, (shape, keys) in enumerate(zip(self.main_shapes, self.main_keys)):
            layer = model.layers[self.start + i]
            if _layer_shape(layer) != shape or (keys is not None and not np.array_equal(layer.value_keys(), keys)):
                raise ValueError(f"main layer {self.start + i} changed since the split (sparse, inputs, units, "
                                 f"stored weights: {shape} expected, got {_layer_shape(layer)}, or another "
                                 "pattern): the submodel cannot be melded into it")


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
            weights = _candidate_weights(model.layers[start + i], rows)
            chosen.append(np.sort(choose_columns(weights, size, self.selection_type, self.std, self.rng)))
        return self._add(start, chosen, consolidation)

    def _check_sizes(self, sizes):
        model = self.model
        if not isinstance(sizes, (list, tuple)) or not all(
                isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in sizes):
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
            order = choose_columns(_candidate_weights(layer, None), layer.size, self.selection_type, self.std,
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
        if not isinstance(depth, numbers.Integral) or isinstance(depth, bool) or not 2 <= depth <= model.depth:
            raise ValueError(f"depth must be an integer in [2, {model.depth}] (layers the submodels span), "
                             f"got {depth!r}")
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
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
            if layer.activation == "softmax":
                raise ValueError(f"main layer {i} is a softmax layer: its units cannot be split apart")
        self.model.layers[-1]._require_parameters()
        if data is not None:
            self.get_average_zeros(data)
        if consolidation == "mean" and self.mean_activations is None:
            raise ValueError("consolidation='mean' needs the units' mean activations: call "
                             "get_average_zeros(inputs) first or pass data=... (or use consolidation="
                             "'original' or 'none')")

    def _add(self, start, chosen, consolidation):
        submodel, plan = _build(self.model, start, chosen, consolidation, self._zero_fraction,
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
            elif isinstance(item, numbers.Integral) and not isinstance(item, bool) and \
                    0 <= item < len(self.plans):
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
                _assign(layer.values, *_merge(weights))
                _assign(layer.biases, *_merge(biases))
                if layer.prune_mask is not None:
                    layer.values[...] *= layer.prune_mask


vulcanizer = Vulcanizer


# ------------------------------------------------------------------ helpers
def _layer_shape(layer):
    return (layer.is_sparse, layer.input_size, layer.size, layer.nnz)


def _assign(array, flat_index, values):
    """array.flat[flat_index] = values, on the array's device, for any memory layout."""
    if flat_index.size == 0:
        return
    xp = array_module(array)
    position = tuple(xp.asarray(p) for p in np.unravel_index(flat_index, tuple(array.shape)))
    array[position] = xp.asarray(np.asarray(values, dtype=array.dtype))


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


def _candidate_weights(layer, rows):
    """Host float64 (rows, n_out) weights of a layer, NaN where there is no weight (pruned, not stored)."""
    weights = np.asarray(to_host(layer.dense_weights()), dtype=np.float64)
    present = present_mask(layer)
    if present is not None:
        weights = np.where(present, weights, np.nan)
    return weights if rows is None else weights[rows]


def _owned_entries(layer, rows, columns, sub_width):
    """Flat indices into ``layer.values`` of the weights (rows x columns), and their submodel keys.

    A submodel key is the flat position in the submodel layer's dense
    (n_in, n_out) matrix of width ``sub_width``.
    """
    if not layer.is_sparse:
        main = (rows[:, None] * layer.size + columns[None, :]).reshape(-1)
        sub = (np.arange(rows.size)[:, None] * sub_width + np.arange(columns.size)[None, :]).reshape(-1)
        return main, sub
    inputs, units = np.divmod(layer.value_keys(), layer.size)
    row_position = np.full(layer.input_size, -1)
    row_position[rows] = np.arange(rows.size)
    column_position = np.full(layer.size, -1)
    column_position[columns] = np.arange(columns.size)
    keep = (row_position[inputs] >= 0) & (column_position[units] >= 0)
    main = np.flatnonzero(keep)
    return main, row_position[inputs[keep]] * sub_width + column_position[units[keep]]


def _consolidation(method, layer, following, removed, zero_fraction, mean_activations):
    """(incoming column over all of ``layer``'s inputs, bias, outgoing row over ``following``'s units).

    The incoming column's entry for an incoming consolidation unit is filled in by the caller.
    """
    n_in, n_out_next = layer.input_size, following.size
    if removed.size == 0:
        return np.zeros(n_in), 0.0, np.zeros(n_out_next)
    outgoing = host_matrix(following)
    if method == "original":
        column = zero_fraction * np.asarray(host_matrix(layer)[:, removed].sum(axis=1)).ravel()
        bias = zero_fraction * float(to_host(layer.biases)[removed].sum(dtype=np.float64))
        row = np.asarray(outgoing[removed].mean(axis=0), dtype=np.float64).ravel()
        return column, bias, row
    means = mean_activations[removed]
    total = float(means.sum())
    row = np.asarray(outgoing[removed].T @ means, dtype=np.float64).ravel()
    return np.zeros(n_in), total, (row / total if total else np.zeros(n_out_next))


def _build(main, start, chosen, consolidation, zero_fraction, mean_activations, seed):
    """The submodel of main layers start.. keeping ``chosen`` units, and its plan."""
    dtype = main.dtype
    extra = consolidation != "none"
    plan = SubmodelPlan(start=start, chosen=[np.asarray(c, dtype=np.int64) for c in chosen],
                        consolidation=consolidation, sub_index=[], main_index=[], bias_units=[], fixed_index=[],
                        fixed_values=[], fixed_biases=[], value_shapes=[], sizes=[], sub_keys=[], main_shapes=[],
                        main_keys=[])
    layers, specs = [], []
    previous_row = None  # the incoming consolidation row (over this layer's units)
    for i, layer in enumerate(main.layers[start:]):
        final = start + i == main.depth - 1
        rows = np.arange(layer.input_size) if i == 0 else plan.chosen[i - 1]
        columns = np.arange(layer.size) if final else plan.chosen[i]
        extra_in, extra_out = extra and i > 0, extra and not final
        n_in, n_out = rows.size + extra_in, columns.size + extra_out
        main_index, keys = _owned_entries(layer, rows, columns, n_out)
        values = to_host(layer.values).reshape(-1)[main_index]
        fixed_keys, fixed_values, bias = [], [], None
        if extra_out:
            removed = np.setdiff1d(np.arange(layer.size), columns)
            column, bias, next_row = _consolidation(consolidation, layer, main.layers[start + i + 1], removed,
                                                    zero_fraction(start + i),
                                                    None if mean_activations is None else mean_activations[start + i])
            corner = [zero_fraction(start + i) * previous_row[removed].sum()
                      if consolidation == "original" else 0.0] if extra_in else []
            fixed_keys.append(np.arange(n_in) * n_out + columns.size)
            fixed_values.append(np.concatenate([column[rows], corner]))
        if extra_in:
            fixed_keys.append(rows.size * n_out + np.arange(columns.size))
            fixed_values.append(previous_row[columns])
        fixed_keys = np.concatenate(fixed_keys) if fixed_keys else np.zeros(0, dtype=np.int64)
        fixed_values = np.concatenate(fixed_values) if fixed_values else np.zeros(0)
        biases = np.concatenate([to_host(layer.biases)[columns], [bias] if extra_out else []]).astype(dtype)
        all_keys = np.concatenate([keys, fixed_keys])
        all_values = np.concatenate([values, fixed_values.astype(dtype)])
        layers.append(_make_layer(layer, n_in, n_out, all_keys, all_values, biases))
        specs.append((layer, main_index, keys, fixed_keys, n_in, n_out))
        plan.bias_units.append(columns)
        plan.fixed_biases.append(None if bias is None else biases[-1])
        plan.main_shapes.append(_layer_shape(layer))
        plan.main_keys.append(layer.value_keys() if layer.is_sparse else None)
        if extra_out:
            previous_row = next_row
    submodel = Model(main.layers[start].input_size, layers, dropout=main.dropout, comp_type=main.comp_type,
                     seed=seed, dtype=dtype, dropout_style=main._dropout_style)
    for sub_layer, (layer, main_index, keys, fixed_keys, n_in, n_out) in zip(submodel.layers, specs):
        positions = _value_positions(sub_layer, np.concatenate([keys, fixed_keys]))
        plan.sub_index.append(positions[:keys.size])
        plan.main_index.append(main_index)
        plan.fixed_index.append(positions[keys.size:])
        plan.fixed_values.append(to_host(sub_layer.values).reshape(-1)[positions[keys.size:]].copy())
        plan.value_shapes.append(tuple(sub_layer.values.shape))
        plan.sizes.append(n_out)
        plan.sub_keys.append(sub_layer.value_keys() if sub_layer.is_sparse else None)
        _carry_masks(layer, sub_layer, main_index, positions[:keys.size], n_in, n_out)
    return submodel, plan


def _make_layer(layer, n_in, n_out, keys, values, biases):
    """A layer of ``layer``'s class holding ``values`` at dense (n_in, n_out) flat positions ``keys``."""
    if layer.is_sparse:  # every given entry is stored, zeros included
        inputs, units = np.divmod(keys, n_out)
        weights = scipy.sparse.csr_matrix((values, (units, inputs)), shape=(n_out, n_in))
    else:
        weights = np.zeros(n_in * n_out, dtype=values.dtype)
        weights[keys] = values
        weights = weights.reshape(n_in, n_out)
    return type(layer)(size=n_out, weights=weights, biases=biases, dropout=layer._own_dropout)


def _value_positions(layer, keys):
    """Flat indices into ``layer.values`` of the dense (n_in, n_out) flat positions ``keys``."""
    if not layer.is_sparse:
        return keys.astype(np.int64)
    positions, found = locate(layer.value_keys(), keys)
    assert found.all(), "a consolidation or owned entry is missing from the pattern"
    return positions


def _carry_masks(layer, sub_layer, main_index, positions, n_in, n_out):
    """Slice the main layer's prune mask and training mask into the submodel layer."""
    if layer.prune_mask is not None:
        mask = np.ones(n_in * n_out, dtype=bool)  # consolidation weights are never pruned
        mask[positions] = to_host(layer.prune_mask).reshape(-1)[main_index]
        sub_layer.prune_mask = mask.reshape(n_in, n_out)
    if layer.training_mask is not None:
        mask = np.zeros(sub_layer.values.size, dtype=bool)  # nor trained by the selected optimizers
        mask[positions] = to_host(layer.training_mask).reshape(-1)[main_index]
        sub_layer.training_mask = mask.reshape(tuple(sub_layer.values.shape))
