"""CPU kernels compiled with Numba, parallel over the machine's cores.

Same functions and calling convention as :mod:`sparana.kernels.generic`, which
is their reference in the tests. Each loop runs in parallel over rows that no
other thread writes, so results do not depend on thread timing or count: a
seeded run is repeatable bit for bit.

A call runs on one thread when its work is too small to pay for waking the
thread pool (up to a hundred microseconds), and so do the element-wise steps
of dense layers (``parallel=False``): between the BLAS matrix products of a
dense model, a second thread pool would only fight BLAS's own threads for the
cores. The sparse products and the updates of sparse layers, which have no
BLAS around them, run in parallel. The sparse products handle four stored
entries per pass over a row of the batch, which halves the loads and stores
of the accumulator.
"""

from __future__ import annotations

import os
import types
import zlib

# Numba's OpenMP threads spin a short while after a kernel, then sleep: long
# enough to make back-to-back kernels cheap to launch, short enough not to
# take the cores from the BLAS threads of the matrix products that follow.
os.environ.setdefault("GOMP_SPINCOUNT", "20000")

import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402

from . import rules  # noqa: E402
from .generic import rule_update  # noqa: E402,F401  (the experimental optimizers' rules)
from .pattern import SparsePattern  # noqa: E402

_OPTIONS = dict(fastmath=True, cache=True, nogil=True)
# Below this many multiply-adds (or elements) a kernel runs on one thread.
PARALLEL_WORK = 1 << 16


class _Kernel:
    """A ``prange`` loop compiled to run in parallel, and run on one thread when its work is small
    (or when asked): then waking the thread pool would cost more than it saves.

    Calls with less work than ``plain_below`` use a plain (non-parallel) compile, which skips
    Numba's thread-pool machinery (a few microseconds a call); the others run the parallel form,
    which LLVM vectorises better for some loops, restricted to one thread when needed.
    """

    def __init__(self, function, plain_below=0):
        self.parallel = njit(parallel=True, **_OPTIONS)(function)
        self.plain_below = plain_below
        # A renamed copy: Numba's on-disk cache is keyed by the function's name and would
        # otherwise hand one variant's machine code to the other.
        copy = types.FunctionType(function.__code__, function.__globals__, function.__name__ + "_plain",
                                  function.__defaults__, function.__closure__)
        copy.__qualname__ = function.__qualname__ + "_plain"
        self.plain = njit(parallel=False, **_OPTIONS)(copy)

    def __call__(self, work, *args, parallel=True):
        """Run on ``args``: in parallel when ``work`` is large and ``parallel``, else on one thread."""
        if work < self.plain_below:
            return self.plain(*args)
        if parallel and work >= PARALLEL_WORK:
            return self.parallel(*args)
        threads = numba.get_num_threads()
        if threads == 1:
            return self.parallel(*args)
        numba.set_num_threads(1)
        try:
            return self.parallel(*args)
        finally:
            numba.set_num_threads(threads)


ALWAYS = float("inf")
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


_BIAS_ACTIVATION = _Kernel(_bias_activation, plain_below=ALWAYS)


def bias_activation(z, bias, relu):
    _BIAS_ACTIVATION(0, z, bias, relu)


def _relu_backward(grad, outputs, scale):
    n, batch = grad.shape
    for k in prange(n):
        g = grad[k]
        a = outputs[k]
        for j in range(batch):
            g[j] = g[j] * scale if a[j] > 0 else 0


_RELU_BACKWARD = _Kernel(_relu_backward, plain_below=ALWAYS)


def relu_backward(grad, outputs, scale=1.0):
    _RELU_BACKWARD(0, grad, outputs, grad.dtype.type(scale))


def _spmm(indptr, indices, data, x, bias, has_bias, relu, out):
    n_out = indptr.size - 1
    batch = x.shape[1]
    for k in prange(n_out):
        acc = out[k]
        b = bias[k] if has_bias else 0
        for j in range(batch):
            acc[j] = b
        p, end = indptr[k], indptr[k + 1]
        while p + 3 < end:
            w0, w1, w2, w3 = data[p], data[p + 1], data[p + 2], data[p + 3]
            x0, x1, x2, x3 = x[indices[p]], x[indices[p + 1]], x[indices[p + 2]], x[indices[p + 3]]
            for j in range(batch):
                acc[j] += (w0 * x0[j] + w1 * x1[j]) + (w2 * x2[j] + w3 * x3[j])
            p += 4
        while p < end:
            w, xr = data[p], x[indices[p]]
            for j in range(batch):
                acc[j] += w * xr[j]
            p += 1
        if relu:
            for j in range(batch):
                if acc[j] < 0:
                    acc[j] = 0


_SPMM = _Kernel(_spmm, plain_below=PARALLEL_WORK)


def spmm(pattern: SparsePattern, data, x, bias, relu, out):
    has_bias = bias is not None
    x = np.ascontiguousarray(x)
    _SPMM(pattern.nnz * x.shape[1], pattern.indptr, pattern.indices, data, x, bias if has_bias else data[:0],
          has_bias, bool(relu and has_bias), out)


def _spmm_t(t_indptr, t_indices, perm, data, grad, out):
    n_in = t_indptr.size - 1
    batch = grad.shape[1]
    for i in prange(n_in):
        acc = out[i]
        for j in range(batch):
            acc[j] = 0
        q, end = t_indptr[i], t_indptr[i + 1]
        while q + 3 < end:
            w0, w1, w2, w3 = data[perm[q]], data[perm[q + 1]], data[perm[q + 2]], data[perm[q + 3]]
            g0, g1 = grad[t_indices[q]], grad[t_indices[q + 1]]
            g2, g3 = grad[t_indices[q + 2]], grad[t_indices[q + 3]]
            for j in range(batch):
                acc[j] += (w0 * g0[j] + w1 * g1[j]) + (w2 * g2[j] + w3 * g3[j])
            q += 4
        while q < end:
            w, gr = data[perm[q]], grad[t_indices[q]]
            for j in range(batch):
                acc[j] += w * gr[j]
            q += 1


_SPMM_T = _Kernel(_spmm_t, plain_below=PARALLEL_WORK)


def spmm_t(pattern: SparsePattern, data, grad, out):
    grad = np.ascontiguousarray(grad)
    _SPMM_T(pattern.nnz * grad.shape[1], pattern.t_indptr, pattern.t_indices, pattern.perm, data, grad, out)


def _sddmm(indptr, indices, grad, x, out):
    n_out = indptr.size - 1
    batch = grad.shape[1]
    zero = out.dtype.type(0)
    for k in prange(n_out):
        gr = grad[k]
        p, end = indptr[k], indptr[k + 1]
        while p + 3 < end:  # four dot products share each load of the gradient row
            x0, x1, x2, x3 = x[indices[p]], x[indices[p + 1]], x[indices[p + 2]], x[indices[p + 3]]
            a0 = a1 = a2 = a3 = zero
            for j in range(batch):
                g = gr[j]
                a0 += g * x0[j]
                a1 += g * x1[j]
                a2 += g * x2[j]
                a3 += g * x3[j]
            out[p], out[p + 1], out[p + 2], out[p + 3] = a0, a1, a2, a3
            p += 4
        while p < end:
            xr = x[indices[p]]
            acc = zero
            for j in range(batch):
                acc += gr[j] * xr[j]
            out[p] = acc
            p += 1


_SDDMM = _Kernel(_sddmm, plain_below=PARALLEL_WORK)


def sddmm(pattern: SparsePattern, grad, x, out):
    grad, x = np.ascontiguousarray(grad), np.ascontiguousarray(x)
    _SDDMM(pattern.nnz * grad.shape[1], pattern.indptr, pattern.indices, grad, x, out)


# Optimizer steps: the rules of sparana.kernels.rules compiled for one entry, run over every entry
# (or every indexed one). Each entry is independent, so the loops split freely across threads.

def _rules_version(*functions):
    """A copy of each loop named after the rules' code: Numba's cache checks only this file, and
    would otherwise keep serving the machine code of a rule edited since."""
    code = repr([(r.__code__.co_code, r.__code__.co_consts, r.__code__.co_names) for r in (rules.adam, rules.sgd)])
    tag = f"{zlib.crc32(code.encode()):08x}"
    copies = []
    for function in functions:
        copy = types.FunctionType(function.__code__, function.__globals__, f"{function.__name__}_{tag}")
        copy.__qualname__ = f"{function.__qualname__}_{tag}"
        copies.append(copy)
    return copies


# Inlined into the loops: a call that is not inlined keeps LLVM from vectorising them (3x slower).
_adam = njit(inline="always", fastmath=True)(rules.adam)
_sgd = njit(inline="always", fastmath=True)(rules.sgd)


def _adam_all(w, g, m, v, scalars):
    for i in prange(w.size):
        w[i], m[i], v[i] = _adam(w[i], g[i], m[i], v[i], scalars)


def _adam_indexed(w, g, index, m, v, scalars):
    for n in prange(index.size):
        i = index[n]
        w[i], m[n], v[n] = _adam(w[i], g[i], m[n], v[n], scalars)


def _sgd_all(w, g, velocity, use_momentum, scalars):
    for i in prange(w.size):
        w[i], vi = _sgd(w[i], g[i], velocity[i] if use_momentum else velocity[0], scalars)
        if use_momentum:
            velocity[i] = vi


def _sgd_indexed(w, g, index, velocity, use_momentum, scalars):
    for n in prange(index.size):
        i = index[n]
        w[i], vi = _sgd(w[i], g[i], velocity[n] if use_momentum else velocity[0], scalars)
        if use_momentum:
            velocity[n] = vi


_ADAM_ALL, _ADAM_INDEXED, _SGD_ALL, _SGD_INDEXED = (
    _Kernel(loop, plain_below=4096) for loop in _rules_version(_adam_all, _adam_indexed, _sgd_all, _sgd_indexed))


def adam_update(w, g, m, v, index, step, parallel=True):
    scalars = step.scalars(w.dtype)
    if index is None:
        _ADAM_ALL(w.size, w, g, m, v, scalars, parallel=parallel)
    else:
        _ADAM_INDEXED(index.size, w, g, index, m, v, scalars, parallel=parallel)


def sgd_update(w, g, velocity, index, step, parallel=True):
    use_momentum = velocity is not None
    velocity = velocity if use_momentum else np.zeros(1, dtype=w.dtype)  # without momentum: one zero for all
    scalars = step.scalars(w.dtype)
    if index is None:
        _SGD_ALL(w.size, w, g, velocity, use_momentum, scalars, parallel=parallel)
    else:
        _SGD_INDEXED(index.size, w, g, index, velocity, use_momentum, scalars, parallel=parallel)
