"""The optimizers' update rules, each written once, for one entry, and the frozen records of their scalars.

A rule maps one weight ``w``, its data gradient ``g``, its state (moments, velocity...) and the
tuple of the step's scalars (a record's :meth:`~Terms.scalars`) to the new weight and state. It is
plain arithmetic plus ``xp`` functions, so the same code runs

* on scalars, compiled by Numba inside the CPU kernels' loops (:mod:`.cpu`);
* on whole arrays, NumPy or CuPy, in :mod:`.generic` (the reference the CPU kernels are tested
  against, and the experimental optimizers' path);
* traced by ``cupy.fuse`` into one GPU kernel (:mod:`.gpu`), with ``xp`` bound to CuPy by
  :func:`with_array_module`.

So a rule has no branches on its arguments: a switched-off term is a zero, and "no clipping" is
the largest finite number of the dtype.

Every rule first applies the terms of :class:`Terms` to the data gradient (clipping, then the
coupled penalties) and subtracts the decoupled decay with its step. A record's
:meth:`~Terms.scalars` gives its fields, in the order the rule unpacks them, as scalars of the
arrays' dtype.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import types
from dataclasses import dataclass

import numpy as np

xp = np  # the rules' array module; with_array_module rebinds it


@dataclass(frozen=True, kw_only=True)
class Terms:
    """What every rule adds: ``g`` clipped to [-clip, clip] (None: not clipped), plus the coupled
    penalties' gradient l2 * w + l1 * sign(w); and the decoupled decay decay2 * w + decay1 * sign(w)
    subtracted from ``w`` with the step (already multiplied by the learning rate)."""

    clip: float | None = None
    l1: float = 0.0
    l2: float = 0.0
    decay1: float = 0.0
    decay2: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "_scalars", {})  # scalars() per dtype: a record serves every layer of a step

    def scalars(self, dtype):
        """The fields as a tuple of scalars of ``dtype``, in the order the rule unpacks them."""
        found = self._scalars.get(dtype)
        if found is None:
            kind = np.dtype(dtype).type
            clip, *values = _fields(type(self))(self)
            found = self._scalars[dtype] = (kind(np.finfo(kind).max if clip is None else clip), *map(kind, values))
        return found


@dataclass(frozen=True, kw_only=True)
class SGDStep(Terms):
    """velocity <- momentum * velocity + g;  w <- w - learning_rate * velocity (no state: momentum 0)."""

    learning_rate: float
    momentum: float = 0.0


@dataclass(frozen=True, kw_only=True)
class AdamStep(Terms):
    """Adam with the bias correction folded into ``step_size`` = lr * sqrt(1 - beta2^t) / (1 - beta1^t).

    ``rest1`` and ``rest2`` are 1 - beta1 and 1 - beta2, derived: written in the rule, the integer 1
    would make Numba compute the moments in float64 (and convert every entry to and fro).
    """

    step_size: float
    beta1: float
    beta2: float
    epsilon: float
    rest1: float = dataclasses.field(init=False)
    rest2: float = dataclasses.field(init=False)

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "rest1", 1 - self.beta1)
        object.__setattr__(self, "rest2", 1 - self.beta2)


@dataclass(frozen=True, kw_only=True)
class MadadadStep(Terms):
    """madadad: an accumulator of same-sign steps (with friction) scales the step."""

    learning_rate: float
    friction: float


@dataclass(frozen=True, kw_only=True)
class AdadadStep(Terms):
    """adadad: heavy-ball momentum that resets where the gradient turns; ``warm`` is 0 while the
    accumulator is held at zero, then 1."""

    learning_rate: float
    friction: float
    momentum: float
    epsilon: float
    warm: float


def sgd(w, g, velocity, scalars):
    clip, l1, l2, decay1, decay2, learning_rate, momentum = scalars
    g = xp.minimum(xp.maximum(g, -clip), clip) + l2 * w + l1 * xp.sign(w)
    velocity = momentum * velocity + g
    return w - (learning_rate * velocity + decay2 * w + decay1 * xp.sign(w)), velocity


def adam(w, g, m, v, scalars):
    clip, l1, l2, decay1, decay2, step_size, beta1, beta2, epsilon, rest1, rest2 = scalars
    g = xp.minimum(xp.maximum(g, -clip), clip) + l2 * w + l1 * xp.sign(w)
    m = beta1 * m + rest1 * g
    v = beta2 * v + rest2 * g * g
    return w - (step_size * m / (xp.sqrt(v) + epsilon) + decay2 * w + decay1 * xp.sign(w)), m, v


def madadad(w, g, accumulator, scalars):
    clip, l1, l2, decay1, decay2, learning_rate, friction = scalars
    g = xp.minimum(xp.maximum(g, -clip), clip) + l2 * w + l1 * xp.sign(w)
    direction = -xp.sign(g)
    accumulator = accumulator * (xp.sign(accumulator) == direction) * friction + direction
    return w - (learning_rate * g * xp.abs(accumulator) + decay2 * w + decay1 * xp.sign(w)), accumulator


def adadad(w, g, accumulator, scalars):
    clip, l1, l2, decay1, decay2, learning_rate, friction, momentum, epsilon, warm = scalars
    g = xp.minimum(xp.maximum(g, -clip), clip) + l2 * w + l1 * xp.sign(w)
    step = learning_rate * (g + momentum * accumulator)
    accumulator = (accumulator * (g * accumulator > -epsilon) * friction + g) * warm
    return w - (step + decay2 * w + decay1 * xp.sign(w)), accumulator


@functools.lru_cache(maxsize=None)
def _fields(record_type):
    """A function giving a record's fields, in order, as a tuple."""
    return operator.attrgetter(*(field.name for field in dataclasses.fields(record_type)))


def with_array_module(rule, module):
    """``rule`` with its ``xp`` functions taken from ``module`` (CuPy for ``cupy.fuse``)."""
    return types.FunctionType(rule.__code__, {**rule.__globals__, "xp": module}, rule.__name__)
