"""GPU kernels: the sparse products as CUDA kernels (:mod:`.cuda`, written with Numba's CUDA
target), the optimizer rules of :mod:`sparana.kernels.rules` fused by ``cupy.fuse`` into one kernel
each, and the array-module code of :mod:`sparana.kernels.generic` for the element-wise rest.

The sparse products read the pattern's index arrays, built on the device once per pattern, and the
layer's arrays in place: no matrix object per product, no copy of an operand, no gathered
transpose values, no (entries x batch) products in the SDDMM, no wait for the device.
"""

import functools

from . import generic, rules
from .cuda import sddmm, spmm, spmm_t  # noqa: F401
from .generic import bias_activation, relu_backward, row_sums  # noqa: F401

__all__ = ["adam_update", "bias_activation", "relu_backward", "row_sums", "rule_update", "sddmm", "sgd_update",
           "spmm", "spmm_t"]


@functools.lru_cache(maxsize=None)
def _fused(rule, states):
    """``rule`` (with ``states`` state arrays) as one CuPy kernel, called like the rule itself.

    The rule's ``xp`` functions are taken from CuPy; cupy.fuse passes arrays and scalars only, so
    the rule's tuple of scalars travels to the kernel as separate arguments.
    """
    import cupy  # (this module imports without CuPy; its functions need it)

    on_cupy = rules.with_array_module(rule, cupy)

    def flat(w, g, *arguments):
        return on_cupy(w, g, *arguments[:states], arguments[states:])

    kernel = cupy.fuse(kernel_name=f"sparana_{rule.__name__}")(flat)
    return lambda w, g, *state_and_scalars: kernel(w, g, *state_and_scalars[:-1], *state_and_scalars[-1])


def rule_update(rule, w, g, state, index, step):
    """One step of ``rule`` on ``w`` and its ``state``, in place, as one fused kernel (see generic.rule_update)."""
    generic.rule_update(_fused(rule, len(state)), w, g, state, index, step)


def adam_update(w, g, m, v, index, step, parallel=True):
    rule_update(rules.adam, w, g, (m, v), index, step)


def sgd_update(w, g, velocity, index, step, parallel=True):
    rule_update(rules.sgd, w, g, (velocity,), index, step)
