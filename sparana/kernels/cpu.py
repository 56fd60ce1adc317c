"""CPU kernels compiled with Numba, parallel over the machine's cores.

Same functions and calling convention as :mod:`sparana.kernels.generic`, which
is their reference in the tests. Each loop runs in parallel over rows that no
other thread writes, so results do not depend on thread timing: a seeded run
is repeatable bit for bit.
"""

from __future__ import annotations

import os

# Numba's OpenMP threads must sleep, not spin, between kernels: spinning threads
# would take the cores from the BLAS threads of the matrix products in between.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402

from .pattern import SparsePattern

_JIT = dict(parallel=True, fastmath=True, cache=True, nogil=True)
_SERIAL = dict(parallel=False, fastmath=True, cache=True, nogil=True)


@njit(**_SERIAL)
def _bias_activation(z, bias, relu):
    n, batch = z.shape
    for k in prange(n):
        b = bias[k]
        row = z[k]
        if relu:
            for j in range(batch):
                value = row[j] + b
                row[j] = value if value > 0 else 0
        else:
            for j in range(batch):
                row[j] += b


def bias_activation(z, bias, relu):
    _bias_activation(z, bias, relu)


@njit(**_SERIAL)
def _relu_backward(grad, outputs, scale):
    n, batch = grad.shape
    for k in prange(n):
        g = grad[k]
        a = outputs[k]
        for j in range(batch):
            g[j] = g[j] * scale if a[j] > 0 else 0


def relu_backward(grad, outputs, scale=1.0):
    _relu_backward(grad, outputs, grad.dtype.type(scale))


@njit(**_JIT)
def _spmm(indptr, indices, data, x, bias, has_bias, relu, out):
    n_out = indptr.size - 1
    batch = x.shape[1]
    for k in prange(n_out):
        acc = out[k]
        b = bias[k] if has_bias else 0
        for j in range(batch):
            acc[j] = b
        for p in range(indptr[k], indptr[k + 1]):
            w = data[p]
            xr = x[indices[p]]
            for j in range(batch):
                acc[j] += w * xr[j]
        if relu:
            for j in range(batch):
                if acc[j] < 0:
                    acc[j] = 0


def spmm(pattern: SparsePattern, data, x, bias, relu, out):
    x = np.ascontiguousarray(x)
    has_bias = bias is not None
    _spmm(pattern.indptr, pattern.indices, data, x, bias if has_bias else data[:0], has_bias,
          bool(relu and has_bias), out)


@njit(**_JIT)
def _spmm_t(t_indptr, t_indices, perm, data, grad, out):
    n_in = t_indptr.size - 1
    batch = grad.shape[1]
    for i in prange(n_in):
        acc = out[i]
        for j in range(batch):
            acc[j] = 0
        for q in range(t_indptr[i], t_indptr[i + 1]):
            w = data[perm[q]]
            gr = grad[t_indices[q]]
            for j in range(batch):
                acc[j] += w * gr[j]


def spmm_t(pattern: SparsePattern, data, grad, out):
    _spmm_t(pattern.t_indptr, pattern.t_indices, pattern.perm, data, np.ascontiguousarray(grad), out)


@njit(**_JIT)
def _sddmm(indptr, indices, grad, x, out):
    n_out = indptr.size - 1
    batch = grad.shape[1]
    for k in prange(n_out):
        gr = grad[k]
        for p in range(indptr[k], indptr[k + 1]):
            xr = x[indices[p]]
            acc = out.dtype.type(0)
            for j in range(batch):
                acc += gr[j] * xr[j]
            out[p] = acc


def sddmm(pattern: SparsePattern, grad, x, out):
    _sddmm(pattern.indptr, pattern.indices, np.ascontiguousarray(grad), np.ascontiguousarray(x), out)


# Optimizer steps. Each element is independent, so the loops split freely across
# threads. ``index`` selects trained entries; the dense variants train all.

@njit(inline="always")
def _gradient(w, g, clip, l1, l2):
    if clip > 0:
        g = min(max(g, -clip), clip)
    if l2 != 0:
        g += l2 * w
    if l1 != 0:
        g += l1 * np.sign(w)
    return g


@njit(**_JIT)
def _adam_all(w, g, m, v, step, beta1, beta2, eps, clip, l1, l2, decay1, decay2):
    for i in prange(w.size):
        wi = w[i]
        gi = _gradient(wi, g[i], clip, l1, l2)
        mi = beta1 * m[i] + (1 - beta1) * gi
        vi = beta2 * v[i] + (1 - beta2) * gi * gi
        m[i] = mi
        v[i] = vi
        w[i] = wi - (step * mi / (np.sqrt(vi) + eps) + decay2 * wi + decay1 * np.sign(wi))


@njit(**_JIT)
def _adam_indexed(w, g, index, m, v, step, beta1, beta2, eps, clip, l1, l2, decay1, decay2):
    for n in prange(index.size):
        i = index[n]
        wi = w[i]
        gi = _gradient(wi, g[i], clip, l1, l2)
        mi = beta1 * m[n] + (1 - beta1) * gi
        vi = beta2 * v[n] + (1 - beta2) * gi * gi
        m[n] = mi
        v[n] = vi
        w[i] = wi - (step * mi / (np.sqrt(vi) + eps) + decay2 * wi + decay1 * np.sign(wi))


def adam_update(w, g, m, v, index, step, beta1, beta2, eps, clip, l1, l2, decay1, decay2):
    f = w.dtype.type
    args = (f(step), f(beta1), f(beta2), f(eps), f(clip), f(l1), f(l2), f(decay1), f(decay2))
    if index is None:
        _adam_all(w, g, m, v, *args)
    else:
        _adam_indexed(w, g, index, m, v, *args)


@njit(**_JIT)
def _sgd_all(w, g, velocity, lr, momentum, use_momentum, clip, l1, l2, decay1, decay2):
    for i in prange(w.size):
        wi = w[i]
        gi = _gradient(wi, g[i], clip, l1, l2)
        if use_momentum:
            gi = momentum * velocity[i] + gi
            velocity[i] = gi
        w[i] = wi - (lr * gi + decay2 * wi + decay1 * np.sign(wi))


@njit(**_JIT)
def _sgd_indexed(w, g, index, velocity, lr, momentum, use_momentum, clip, l1, l2, decay1, decay2):
    for n in prange(index.size):
        i = index[n]
        wi = w[i]
        gi = _gradient(wi, g[i], clip, l1, l2)
        if use_momentum:
            gi = momentum * velocity[n] + gi
            velocity[n] = gi
        w[i] = wi - (lr * gi + decay2 * wi + decay1 * np.sign(wi))


def sgd_update(w, g, velocity, index, lr, momentum, clip, l1, l2, decay1, decay2):
    f = w.dtype.type
    use_momentum = velocity is not None
    velocity = velocity if use_momentum else w[:0]
    args = (f(lr), f(momentum), use_momentum, f(clip), f(l1), f(l2), f(decay1), f(decay2))
    if index is None:
        _sgd_all(w, g, velocity, *args)
    else:
        _sgd_indexed(w, g, index, velocity, *args)
