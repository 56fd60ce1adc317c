"""SubmodelPlan: what melding a submodel back into its main model, and reverting its consolidation
weights, needs: plain index arrays, so that a plan can travel to a Ray worker.

Ownership: weight W[start+i][j, k] (dense (n_in, n_out) orientation) belongs to a submodel if
unit k is one of its chosen units of main layer start+i (any output for the final layer) and j is
one of its chosen units of the previous layer (any input for i = 0); the biases of its chosen
units (all final biases) too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._backend import array_module, to_host
from ..nn._model import Model


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
        """Restore the submodel's consolidation weights and biases to their split-time values.

        Called after every training step: the submodel is checked, and the positions and values
        sent to its device, once per layer and pattern (a layer's ``version``), not every time.
        """
        cache = self.__dict__.setdefault("_reverts", {})
        for i, (layer, index, values, bias) in enumerate(zip(submodel.layers, self.fixed_index, self.fixed_values,
                                                             self.fixed_biases)):
            key = (id(layer), layer.version, id(layer.values))
            if cache.get(i, (None,))[0] != key:
                self.check_submodel(submodel)
                cache[i] = (key, _positions(layer.values, index, values))
            position, device_values = cache[i][1]
            if position is not None:
                layer.values[position] = device_values
            if bias is not None:
                layer.biases[-1] = bias

    def __getstate__(self):  # a plan travels without what one process cached for its devices
        return {key: value for key, value in self.__dict__.items() if key != "_reverts"}

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
            if layer_shape(layer) != shape or (keys is not None and not np.array_equal(layer.value_keys(), keys)):
                raise ValueError(f"main layer {self.start + i} changed since the split (sparse, inputs, units, "
                                 f"stored weights: {shape} expected, got {layer_shape(layer)}, or another "
                                 "pattern): the submodel cannot be melded into it")


def layer_shape(layer):
    return (layer.is_sparse, layer.input_size, layer.size, layer.nnz)


def assign(array, flat_index, values):
    """array.flat[flat_index] = values, on the array's device, for any memory layout."""
    position, device_values = _positions(array, flat_index, values)
    if position is not None:
        array[position] = device_values


def _positions(array, flat_index, values):
    """(index tuple, values) on ``array``'s device for array.flat[flat_index] = values ((None, None): nothing)."""
    if flat_index.size == 0:
        return None, None
    xp = array_module(array)
    position = tuple(xp.asarray(p) for p in np.unravel_index(flat_index, tuple(array.shape)))
    return position, xp.asarray(np.asarray(values, dtype=array.dtype))
