"""Kernels written once for any array module (NumPy or CuPy).

Run on NumPy arrays, this is the plain reference that the Numba kernels (:mod:`.cpu`) and the CUDA
kernels (:mod:`.cuda`) are tested against; on the GPU, :mod:`.gpu` uses its element-wise kernels
(bias and ReLU, the ReLU derivative) and its rule updates, fused. All kernels share one calling
convention (see :mod:`sparana.kernels`): activations are feature-major (features x batch), results
go into ``out`` arguments, updates are in place.
"""

from __future__ import annotations

import scipy.sparse

from .._backend import array_module as _xp
from .._backend import is_device_array
from . import rules
from .pattern import SparsePattern

# Largest number of (non-zero x batch) products gathered at once by the SDDMM.
_SDDMM_CHUNK = 1 << 24


def _sp(array):
    if is_device_array(array):
        import cupyx.scipy.sparse

        return cupyx.scipy.sparse
    return scipy.sparse


def bias_activation(z, bias, relu):
    """z[k, :] += bias[k], then ReLU when ``relu`` (in place)."""
    z += bias[:, None]
    if relu:
        _xp(z).maximum(z, 0, out=z)


def relu_backward(grad, outputs, scale=1.0):
    """grad *= scale * (outputs > 0), in place: the ReLU (and dropout) derivative."""
    grad *= (outputs > 0).astype(grad.dtype)
    if scale != 1.0:
        grad *= grad.dtype.type(scale)


def row_sums(a, out):
    """out[k] = sum of row k of ``a`` (a bias gradient from dL/dz)."""
    _xp(a).sum(a, axis=1, out=out)


def spmm(pattern: SparsePattern, data, x, bias, relu, out):
    """out = W @ x (+ bias, ReLU) for W in CSR (n_out x n_in) with values ``data``."""
    matrix = _sp(x).csr_matrix((data, pattern.indices, pattern.indptr), shape=pattern.shape)
    out[...] = matrix @ x
    if bias is not None:
        bias_activation(out, bias, relu)


def spmm_t(pattern: SparsePattern, data, grad, out):
    """out = W.T @ grad, the input gradient of a sparse layer."""
    matrix_t = _sp(grad).csr_matrix(
        (data[pattern.perm], pattern.t_indices, pattern.t_indptr), shape=pattern.shape[::-1])
    out[...] = matrix_t @ grad


def sddmm(pattern: SparsePattern, grad, x, out):
    """out[p] = grad[row_p, :] . x[col_p, :]: the weight gradient at the stored positions only."""
    batch = max(grad.shape[1], 1)
    step = max(_SDDMM_CHUNK // batch, 1)
    for start in range(0, pattern.nnz, step):
        stop = min(start + step, pattern.nnz)
        rows = pattern.rows[start:stop]
        cols = pattern.indices[start:stop]
        out[start:stop] = (grad[rows] * x[cols]).sum(axis=1)


def rule_update(rule, w, g, state, index, step):
    """One step of ``rule`` (see :mod:`.rules`) on the flat parameter ``w``, in place, as whole-array code.

    ``index`` (or None for every entry) selects the trained entries of ``w`` and ``g``; each
    array of ``state`` holds one value per trained entry and is updated in place, or is None for a
    state that is zero and not kept (SGD without momentum); ``step`` is the rule's record of scalars.
    """
    wi = w if index is None else w[index]
    gi = g if index is None else g[index]
    zero = w.dtype.type(0)
    new_w, *new_state = rule(wi, gi, *(zero if s is None else s for s in state), step.scalars(w.dtype))
    for array, new in zip(state, new_state):
        if array is not None:
            array[...] = new
    if index is None:
        w[...] = new_w
    else:
        w[index] = new_w


def adam_update(w, g, m, v, index, step, parallel=True):
    """One Adam step (``step``: an :class:`~.rules.AdamStep`) with moments ``m`` and ``v``, in place.

    ``parallel`` is a hint for the CPU kernels (ignored here).
    """
    rule_update(rules.adam, w, g, (m, v), index, step)


def sgd_update(w, g, velocity, index, step, parallel=True):
    """One SGD step (``step``: an :class:`~.rules.SGDStep`), with momentum when ``velocity`` is given."""
    rule_update(rules.sgd, w, g, (velocity,), index, step)
