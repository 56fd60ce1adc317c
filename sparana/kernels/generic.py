"""Kernels written once for any array module (NumPy or CuPy).

This module is the GPU implementation (every call runs on CuPy arrays there)
and, run on NumPy arrays, the plain reference that the Numba kernels of
:mod:`sparana.kernels.cpu` are tested against. All kernels share one calling
convention (see :mod:`sparana.kernels`): activations are feature-major
(features x batch), results go into ``out`` arguments, updates are in place.
"""

from __future__ import annotations

import scipy.sparse

from .._backend import array_module as _xp
from .._backend import is_device_array
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


def _effective_gradient(w, g, clip, l1, l2):
    xp = _xp(w)
    if clip > 0:
        g = xp.clip(g, -clip, clip)
    if l2:
        g = g + w.dtype.type(l2) * w
    if l1:
        g = g + w.dtype.type(l1) * xp.sign(w)
    return g


def _decoupled(w, decay1, decay2):
    xp = _xp(w)
    return decay2 * w + decay1 * xp.sign(w)


def adam_update(w, g, m, v, index, step, beta1, beta2, eps, clip, l1, l2, decay1, decay2, parallel=True):
    """One Adam step on the flat parameter ``w`` (in place).

    ``index`` (or None for every entry) selects the trained entries of ``w`` and
    ``g``; ``m`` and ``v`` hold one moment per trained entry. ``step`` is the
    bias-corrected step size lr*sqrt(1-beta2^t)/(1-beta1^t); ``clip`` > 0 clips
    the data gradient element-wise; ``l1``/``l2`` are coupled penalties (part of
    the loss); ``decay1``/``decay2`` are the original's decoupled decays, already
    multiplied by lr/B. ``parallel`` is a hint for the CPU kernels (ignored here).
    """
    dtype = w.dtype.type
    wi = w if index is None else w[index]
    gi = g if index is None else g[index]
    gi = _effective_gradient(wi, gi, clip, l1, l2)
    m *= dtype(beta1)
    m += dtype(1 - beta1) * gi
    v *= dtype(beta2)
    v += dtype(1 - beta2) * gi * gi
    delta = dtype(step) * m / (_xp(w).sqrt(v) + dtype(eps))
    if decay1 or decay2:
        delta += _decoupled(wi, dtype(decay1), dtype(decay2))
    if index is None:
        w -= delta
    else:
        w[index] = wi - delta


def sgd_update(w, g, velocity, index, lr, momentum, clip, l1, l2, decay1, decay2, parallel=True):
    """One SGD step (with heavy-ball momentum when ``velocity`` is given), in place.

    velocity <- momentum * velocity + g;  w <- w - lr * velocity.  The other
    arguments are those of :func:`adam_update`.
    """
    dtype = w.dtype.type
    wi = w if index is None else w[index]
    gi = g if index is None else g[index]
    gi = _effective_gradient(wi, gi, clip, l1, l2)
    if velocity is not None:
        velocity *= dtype(momentum)
        velocity += gi
        gi = velocity
    delta = dtype(lr) * gi
    if decay1 or decay2:
        delta = delta + _decoupled(wi, dtype(decay1), dtype(decay2))
    if index is None:
        w -= delta
    else:
        w[index] = wi - delta
