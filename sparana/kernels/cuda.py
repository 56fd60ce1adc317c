"""CUDA kernels of the sparse products, written with Numba's CUDA target.

On a GPU they run on CuPy arrays, which Numba reads through ``__cuda_array_interface__`` without a
copy or a wait (the interface's stream synchronisation is off: CuPy and Numba both launch on the
legacy default stream, so the kernels run in order). On a machine without a GPU, Numba's CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1``) runs the very same code on NumPy arrays: that is how the CPU
tests check them against the plain reference (``tests/test_cuda_kernels.py``).

Layout: activations are feature-major and C-contiguous, (features, batch), so that one row of an
operand is contiguous across the batch; CSR (n_out, n_in) with sorted indices (int32 or int64).

* :func:`spmm`: out[r, b] = sum_k data[k] x[indices[k], b] (+ bias[r], ReLU). One block per output
  row and tile of the batch; its threads walk the row's entries together, each over its own batch
  column, so that every read of x is coalesced and every write is its own.
* :func:`spmm_t`: the same on the transposed pattern, reading ``data[perm[q]]`` in place (the
  transpose's values are never gathered into an array).
* :func:`sddmm`: out[p] = sum_b grad[row_p, b] x[col_p, b]. One warp-wide row of a block per stored
  entry: its 32 threads stride over the batch and reduce in shared memory; no (entries x batch)
  products are ever stored.
"""

from __future__ import annotations

import math

import numpy as np

THREADS = 128  # batch columns per block of spmm / spmm_t (at most; fewer for small batches)
LANES = 32  # a warp: spmm's blocks have a multiple of it, and entry_dots sums one entry's products on one


def _kernels():
    """The compiled kernels (:mod:`._cuda_kernels`, imported on first use: it imports Numba's CUDA target)."""
    from . import _cuda_kernels

    return _cuda_kernels


def _device(array):
    """A Numba view of a CuPy array (no copy, no synchronisation); NumPy arrays pass as they are."""
    if hasattr(array, "__cuda_array_interface__"):
        return _kernels().cuda.from_cuda_array_interface(array.__cuda_array_interface__, owner=array, sync=False)
    return array


def _rows_product(indptr, indices, data, perm, x, bias, relu, out):
    rows, batch = out.shape
    if rows == 0 or batch == 0:
        return
    threads = min(THREADS, LANES * math.ceil(batch / LANES))
    placeholder = indptr[:1]  # unused when use_perm / use_bias is False (Numba needs an array)
    _kernels().rows_product[(rows, math.ceil(batch / threads)), threads](
        *map(_device, (indptr, indices, data, placeholder if perm is None else perm)), perm is not None,
        _device(x), _device(data[:1] if bias is None else bias), bias is not None, bool(relu),
        np.dtype(out.dtype).type(0), _device(out))


def spmm(pattern, data, x, bias, relu, out):
    """out = W @ x (+ bias, ReLU) for W in CSR (n_out x n_in) with values ``data``."""
    _rows_product(pattern.indptr, pattern.indices, data, None, x, bias, relu, out)


def spmm_t(pattern, data, grad, out):
    """out = W.T @ grad, through the pattern's transpose (its values read as data[perm])."""
    _rows_product(pattern.t_indptr, pattern.t_indices, data, pattern.perm, grad, None, False, out)


def sddmm(pattern, grad, x, out):
    """out[p] = grad[row_p, :] . x[col_p, :]: the weight gradient at the stored positions only."""
    if pattern.nnz == 0:
        return
    kernels = _kernels()
    kernels.entry_dots[math.ceil(pattern.nnz / kernels.ENTRIES), (kernels.LANES, kernels.ENTRIES)](
        *map(_device, (pattern.rows, pattern.indices, grad, x, out)))
