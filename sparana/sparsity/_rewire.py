"""Dynamic sparse training: the Rewirer replaces a fraction of each sparse layer's weights while it learns.

A rewiring step drops, in every rewired layer, a fraction of the stored weights and grows as many
connections that were not stored, so that each layer keeps exactly its number of weights:

* 'SET' (Mocanu et al. 2018) drops the smallest non-negative weights and the negative weights
  closest to zero (the fraction of each sign on its own) and grows at random positions; new
  weights are drawn from the initialiser (``init_method``, ``scale``; see
  :mod:`sparana.nn._sparse_init`), scaled by the new pattern's live fans, as in SET's paper;
  ``init_method=0.0`` starts them at zero instead, as the RigL authors' SET does (in
  ``jobs/dynamic_sparse.py`` that trained better: the initialiser's draws are noise that the
  network first has to unlearn).
* 'RigL' (Evci et al. 2020) drops the weights smallest in magnitude and grows where the dense
  gradient |dL/dW| on a batch is largest; new weights start at zero. The dense gradient is
  computed in blocks of rows, so a large layer's is never held whole
  (:func:`sparana.kernels.rewiring.top_gradient_positions`).

A regrown connection is always one that was not stored before the step. How much is rewired at
each step is kept apart from which weights are chosen: the fraction follows a schedule
(:func:`._pruning.rewire_fraction`: constant, cosine or linear decay to ``end``).

The optimizer's state follows the new pattern (kept entries keep theirs, dropped ones lose it,
new ones start at zero), and so do training masks (a new connection is trained) and the
statistics a Lobotomizer or ParameterSelector holds (a new connection's is NaN: it is no
candidate until statistics are computed again).
"""

from __future__ import annotations

import numpy as np

from .._backend import to_host
from .._checks import check_integer, check_ratio
from ..kernels import rewiring
from ..nn._init_rules import normal, weight_std
from ..nn._losses import resolve_loss
from ..nn._sparse_init import check_scale, entry_stds
from ._pruning import rewire_fraction

METHODS = ("SET", "RigL")


class Rewirer:
    """Rewire the sparse (CSR) layers of ``model``: ``rewire()`` now, ``step()`` after each optimizer step.

    ``method``: 'SET' or 'RigL' (see the module docstring). ``fraction``: the share of each
    layer's stored weights replaced at the first rewiring, decaying with ``schedule``
    ('cosine', 'linear' or 'constant') to 0 at step ``end`` (needed by the decaying
    schedules; no rewiring from ``end`` on). ``every``: ``step()`` rewires after every
    ``every``-th call. ``layers``: indices of the layers to rewire (default every sparse layer).
    ``seed``: SET's random growth (an int, SeedSequence or Generator). ``optimizer``: the
    optimizer whose state follows the new pattern (default: every optimizer built for the
    model) and, for RigL, whose last batch gives the gradient. ``loss``: the loss whose gradient
    RigL ranks (default: the optimizer's, else cross-entropy).
    """

    def __init__(self, model, method="SET", fraction=0.3, every=100, schedule="cosine", seed=None, end=None,
                 layers=None, init_method="Xavier", scale="live", optimizer=None, loss=None):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        check_ratio("fraction", fraction)
        self.model = model
        self.method = method
        self.fraction = float(fraction)
        self.every = check_integer("every", every, low=1)
        self.end = None if end is None else check_integer("end", end, low=1)
        self.schedule = schedule
        rewire_fraction(self.fraction, 0, self.end, schedule)  # refuses an unknown schedule, or one without end
        self.layers = None if layers is None else [check_integer("layers[...]", i, 0, model.depth - 1) for i in layers]
        weight_std(init_method, 1, 1)  # refuses an unknown initialisation rule
        self.init_method = init_method
        self.scale = check_scale(scale)
        self.optimizer = _owned(optimizer, model)
        self.loss = None if loss is None else resolve_loss(loss)
        self.rng = np.random.default_rng(seed)
        self.steps = 0
        self.history = []

    # ------------------------------------------------------------------ public
    def fraction_at(self, step=None):
        """The fraction the schedule gives at ``step`` (default: the steps counted so far)."""
        return rewire_fraction(self.fraction, self.steps if step is None else step, self.end, self.schedule)

    def step(self, optimizer=None, inputs=None, labels=None):
        """Count one training step; rewire after every ``every``-th (before ``end``).

        Returns what :meth:`rewire` returns when it rewired, else None.
        """
        self.steps += 1
        if self.steps % self.every or (self.end is not None and self.steps >= self.end):
            return None
        return self.rewire(inputs, labels, optimizer=optimizer)

    def rewire(self, inputs=None, labels=None, fraction=None, optimizer=None):
        """Rewire now; returns the number of connections replaced in each layer of the model (0 if not rewired).

        ``fraction``: this step's share (default the schedule's). RigL needs a batch: ``inputs`` and
        ``labels``, or the last batch of the optimizer.
        """
        fraction = self.fraction_at() if fraction is None else fraction
        check_ratio("fraction", fraction)
        optimizers = self._optimizers(optimizer)
        indices = self._indices()
        hosts = {i: _on_host(self.model.layers[i]) for i in indices}
        drops = {i: self._drop(self.model.layers[i], hosts[i][0], fraction) for i in indices}
        counts = [0] * self.model.depth
        for i, keep in drops.items():
            counts[i] = int(keep.size - keep.sum())
        grown = self._gradient_growth(counts, inputs, labels, optimizers, hosts) if self.method == "RigL" else {}
        for i, keep in drops.items():
            self._apply(self.model.layers[i], hosts[i], keep, counts[i], grown.get(i))
        for each in optimizers:
            each.sync()
        self.history.append({"step": self.steps, "fraction": float(fraction), "replaced": list(counts)})
        return counts

    def state_dict(self):
        """The steps counted, the random state and the history (plain data), to resume a run."""
        return {"steps": self.steps, "rng": self.rng.bit_generator.state, "history": list(self.history)}

    def load_state_dict(self, state):
        """Continue from :meth:`state_dict` output."""
        self.steps = check_integer("steps", state["steps"], low=0)
        self.rng.bit_generator.state = state["rng"]
        self.history = list(state["history"])

    # --------------------------------------------------------------- internals
    def _indices(self):
        if self.layers is None:
            indices = [i for i, layer in enumerate(self.model.layers) if layer.is_sparse]
            if not indices:
                raise ValueError("the model has no sparse layer to rewire: convert layers with "
                                 "model.convert_to_sparse(...) first")
            return indices
        for i in self.layers:
            if not self.model.layers[i].is_sparse:
                raise ValueError(f"layer {i} is dense: only sparse (CSR) layers are rewired "
                                 f"(model.convert_to_sparse([{i}]) first)")
        return list(self.layers)

    def _optimizers(self, optimizer):
        if optimizer is not None:
            return [_owned(optimizer, self.model)]
        if self.optimizer is not None:
            return [self.optimizer]
        return self.model.optimizers

    def _drop(self, layer, values, fraction):
        """Keep mask of the layer's stored weights (``values``, on the host); no more dropped than there
        are free positions."""
        if self.method == "SET":
            keep = rewiring.drop_smallest_signed(values, fraction)
        else:
            keep = rewiring.drop_smallest_magnitude(values, int(round(fraction * values.size)))
        free = layer.size * layer.input_size - layer.nnz
        dropped = np.flatnonzero(~keep)
        if dropped.size > free:  # a nearly dense layer: keep the largest of those chosen
            keep[dropped[np.argsort(np.abs(values[dropped]), kind="stable")[free:]]] = True
        return keep

    def _gradient_growth(self, counts, inputs, labels, optimizers, hosts):
        """{layer: positions to grow} where |dL/dW| on the batch is largest, for every layer to grow in."""
        wanted = {i: c for i, c in enumerate(counts) if c}
        if not wanted:
            return {}
        if inputs is None:
            inputs, labels = self._last_batch(optimizers)
        loss, reduction = ("cross_entropy", None) if not optimizers else (optimizers[0].loss, optimizers[0].reduction)
        if self.loss is not None:
            loss, reduction = self.loss, None
        gradients = {}

        def keep(i, grad_z):
            if i in wanted:
                gradients[i] = to_host(grad_z, copy=True)

        self.model.backprop(inputs, labels, loss, backward_layers=self.model.depth - min(wanted), reduction=reduction,
                            grad_hook=keep, parameter_gradients=False)
        # Ranked after the backward pass, not within it: BLAS's threads, spinning a while after each
        # dense product, would take the cores from the sparse kernels of the backward pass.
        grown = {}
        for i, grad_z in gradients.items():
            _, indptr, indices = hosts[i]
            grown[i], _ = rewiring.top_gradient_positions(grad_z, to_host(self.model.layers[i]._inputs), indptr,
                                                          indices, wanted[i])
        return grown

    def _last_batch(self, optimizers):
        batches = [o.last_batch for o in optimizers if o.last_batch is not None]
        if len(batches) != 1:
            found = "none has trained a step" if not batches else f"{len(batches)} have"
            raise ValueError(f"RigL grows where the gradient on a batch is largest: pass inputs and labels, or one "
                             f"optimizer that has trained a step (of the model's optimizers, {found})")
        return batches[0]

    def _apply(self, layer, host, keep, count, grown):
        """Replace the dropped entries of ``layer`` (``host``: its values, indptr and indices on the host)
        by ``count`` new ones (``grown``, or random)."""
        if count == 0:
            return
        values, indptr, indices = host
        n_out, n_in = layer.pattern.shape
        stored = rewiring.stored_positions(indptr, indices, n_in)
        if grown is None:
            grown = rewiring.free_positions(self.rng, n_out * n_in, count, stored)
        kept = np.flatnonzero(keep)
        indptr, cols, data, source, slots = rewiring.rebuild(stored[kept], values[kept], kept, grown, (n_out, n_in))
        if self.method == "SET":  # new weights from the initialiser, scaled by the new pattern's fans
            rows, new_cols = np.divmod(grown, n_in)
            stds = entry_stds(self.init_method, (n_out, n_in), rows, new_cols, np.diff(indptr),
                              np.bincount(cols, minlength=n_in), layer.nnz / (n_out * n_in), self.scale)
            data[slots] = normal(self.rng, slots.size, stds, data.dtype)
        layer.rewire(indptr, cols, data, source)


def _owned(optimizer, model):
    """``optimizer`` (or None), checked to be one of ``model``'s."""
    if optimizer is not None and optimizer.model is not model:
        raise ValueError("the optimizer must belong to the model being rewired (optimizer.model is model)")
    return optimizer


def _on_host(layer):
    """(values, indptr, indices) of a sparse layer on the host: copied from the device once per rewiring."""
    return to_host(layer.values), to_host(layer.pattern.indptr), to_host(layer.pattern.indices)
