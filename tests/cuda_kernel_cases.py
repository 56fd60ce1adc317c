"""The CUDA kernels (sparana.kernels.cuda) against the plain reference, on random inputs.

Run by tests/test_cuda_kernels.py in a process with NUMBA_ENABLE_CUDASIM=1 (Numba's CUDA simulator
runs the kernels on NumPy arrays, on the CPU), and by tests/gpu on CuPy arrays on a real GPU.
Sizes are small: the simulator runs every GPU thread as a Python thread.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from sparana._backend import to_host
from sparana.kernels import cuda, generic
from sparana.kernels.pattern import SparsePattern

# (rows, columns, batch, density): empty rows, a batch of one, batches that are not a multiple of 32
CASES = [(7, 5, 3, 0.4), (6, 9, 33, 0.3), (3, 12, 1, 0.5), (4, 4, 2, 0.0), (5, 6, 65, 1.0)]


def random_case(rows, columns, batch, density, dtype, rng):
    matrix = scipy.sparse.random(rows, columns, density=density, random_state=rng, format="csr", dtype=dtype)
    matrix.sort_indices()
    if rows > 2:  # an empty row
        matrix = matrix.tolil()
        matrix[1, :] = 0
        matrix = matrix.tocsr()
        matrix.eliminate_zeros()
    x = rng.standard_normal((columns, batch)).astype(dtype)
    grad = rng.standard_normal((rows, batch)).astype(dtype)
    bias = rng.standard_normal(rows).astype(dtype)
    return matrix, x, grad, bias


def check(xp=np, tolerance=None, threads=None):
    """Compare every kernel with the reference on every case; return the number of comparisons.

    ``threads``: batch columns per block of the row products (default the module's), small to have
    several tiles of the batch in small cases.
    """
    if threads is not None:
        cuda.THREADS = threads
    rng = np.random.default_rng(0)
    checked = 0
    for dtype in (np.float32, np.float64):
        rtol = tolerance or (1e-5 if dtype == np.float32 else 1e-12)
        for rows, columns, batch, density in CASES:
            matrix, x, grad, bias = random_case(rows, columns, batch, density, dtype, rng)
            host = SparsePattern(matrix.indptr, matrix.indices, matrix.shape)
            pattern = SparsePattern(matrix.indptr, matrix.indices, matrix.shape, xp=xp)
            data = xp.asarray(matrix.data)
            for use_bias, relu in ((False, False), (True, False), (True, True)):
                expected = np.empty((rows, batch), dtype)
                generic.spmm(host, matrix.data, x, bias if use_bias else None, relu, expected)
                out = xp.full((rows, batch), np.nan, dtype)
                cuda.spmm(pattern, data, xp.asarray(x), xp.asarray(bias) if use_bias else None, relu, out)
                np.testing.assert_allclose(to_host(out), expected, rtol=rtol, atol=rtol)
                checked += 1
            expected = np.empty((columns, batch), dtype)
            generic.spmm_t(host, matrix.data, grad, expected)
            out = xp.full((columns, batch), np.nan, dtype)
            cuda.spmm_t(pattern, data, xp.asarray(grad), out)
            np.testing.assert_allclose(to_host(out), expected, rtol=rtol, atol=rtol)
            expected = np.empty(matrix.nnz, dtype)
            generic.sddmm(host, grad, x, expected)
            out = xp.full(matrix.nnz, np.nan, dtype)
            cuda.sddmm(pattern, xp.asarray(grad), xp.asarray(x), out)
            np.testing.assert_allclose(to_host(out), expected, rtol=rtol, atol=rtol)
            checked += 2
    return checked


if __name__ == "__main__":
    print(f"OK {check(threads=32)} comparisons")
