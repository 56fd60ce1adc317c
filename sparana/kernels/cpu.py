"""CPU kernels compiled with Numba, parallel over the machine's cores.

Same functions and calling convention as :mod:`sparana.kernels.generic`, which
is their reference in the tests. Each loop runs in parallel over rows that no
other thread writes, so results do not depend on thread timing or count: a
seeded run is repeatable bit for bit.

How many threads a call runs on is chosen by :mod:`sparana._threads`: the CPUs
this process may use and no other process keeps busy, and no more than its
work pays for (one thread per :data:`PARALLEL_WORK` multiply-adds begun). A call
that gets one thread runs a plain (non-parallel) compile; so do the element-wise
steps of dense layers (``parallel=False``):
between the BLAS matrix products of a dense model, a second thread pool would
only fight BLAS's own threads for the cores.

The sparse products (SpMM, its transpose, SDDMM) walk the rows of the sparse
matrix; each stored entry (row k, column i) pairs row i of the dense operand
(a feature across the batch) with row k of the other. The batch is cut into
tiles of :data:`TILE_BYTES` (128 float32, 64 float64): a tile of the dense
operand (n_in x 512 bytes, 400 KB for 784 inputs) stays in the core's L2 cache
while the rows of a block use it, and the tile of the row being computed
stays in vector registers across its stored entries (four entries a pass),
so that each entry costs one load of the operand per vector and no load or
store of the result. The columns that do not fill a tile go through half a
tile (64 float32, the column group of one thread in the compiled step,
:mod:`.cpu_step`) the same way, and the rest (a batch of 100 after its 64, the
last 40 of 1,000) through the same loop with its sums in the output row.
The transposed product runs the same kernel over the rows of the transpose
(the CSC pattern kept once per pattern), so that each thread writes its own
output rows. Rows are split into blocks of about equal work, one per thread.
What bounds these kernels is that load of the operand: one vector from L2 per
vector multiply-add, about 50 to 60 GFLOP/s a core here, a third of GEMM. Two
things keep that load cheap: the layers' work arrays start on a cache line
(``sparana._backend.aligned_empty``; NumPy's own start 16 bytes past one, so a
512-byte row spans 9 lines), and the vectors are 512-bit where the CPU has
AVX-512 (:func:`_wide_vectors`): each entry then costs half the loads and
multiply-adds.
"""

from __future__ import annotations

import functools
import os
import types as _pytypes
import zlib

# Threads that wait for work spin a short while, then sleep: long enough to make the
# back-to-back kernels of a step cheap to launch, short enough not to keep a core
# from a thread that is descheduled (see sparana._threads). Read by OpenMP when
# Numba starts its thread pool, hence set before Numba loads.
os.environ.setdefault("GOMP_SPINCOUNT", "20000")

import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import njit, prange, types  # noqa: E402
from numba.core import cgutils  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

from .. import _threads  # noqa: E402
from .._backend import ALIGNMENT, aligned_empty  # noqa: E402
from . import rules  # noqa: E402
from .generic import rule_update  # noqa: E402,F401  (the experimental optimizers' rules)
from .pattern import SparsePattern  # noqa: E402


def _wide_vectors():
    """Numba's features of this CPU, with 512-bit vectors preferred where it has AVX-512; else None.

    LLVM tunes code for CPUs with AVX-512 (Ice Lake, Sapphire Rapids, which a VM may report as
    Rocket Lake) to prefer 256-bit vectors, for the lower clock of older chips under 512-bit code.
    With 512-bit vectors the sparse products do half the loads and multiply-adds per stored entry:
    at batch 128 they ran 1.1 to 1.4x faster here. Numba's own list of the features is the base, so
    that NUMBA_ENABLE_AVX=0 (which leaves out every AVX feature) still holds.
    """
    from numba.core.codegen import get_host_cpu_features

    features = get_host_cpu_features()  # ('' where LLVM cannot read them)
    return features + ",-prefer-256-bit" if "+avx512f" in features.split(",") else None


# For the whole process (the user's own Numba code too), and only if set before Numba sets up its
# CPU target, at the first function it compiles or decorates: importing Numba code before this
# module keeps Numba's choice. A NUMBA_CPU_FEATURES (or NUMBA_CPU_NAME) of the user's wins.
if numba.config.CPU_FEATURES is None:
    numba.config.CPU_FEATURES = _wide_vectors()

# NumPy's error model: Python's would test every division for a zero divisor (and raise), a branch
# that keeps LLVM from vectorising the loops (Adam's step on one thread: 3x slower).
_OPTIONS = dict(fastmath=True, cache=True, nogil=True, error_model="numpy")
# Multiply-adds (or elements) that pay for one more thread; below it a kernel runs on one thread.
PARALLEL_WORK = 1 << 16
# Row blocks per thread in the sparse products (more than one only in tests, to cross block edges).
BLOCKS_PER_THREAD = 1
# Bytes of a batch tile: 8 AVX-512 or 16 AVX2 registers of sums.
TILE_BYTES = 512


def _renamed(function, suffix):
    """A copy of ``function`` named ``<name>_<suffix>`` (the key of Numba's on-disk cache)."""
    copy = _pytypes.FunctionType(function.__code__, function.__globals__, f"{function.__name__}_{suffix}",
                                 function.__defaults__, function.__closure__)
    copy.__qualname__ = f"{function.__qualname__}_{suffix}"
    return copy


class _Kernel:
    """A ``prange`` loop compiled twice: to run in parallel, and plain (one thread, without Numba's
    thread-pool machinery, a few microseconds a call).

    A call whose work pays for one thread only runs the plain compile; so does every call of a
    kernel made with ``threaded=False`` or called with ``parallel=False``.
    """

    def __init__(self, function, threaded=True):
        self.parallel = njit(parallel=True, **_OPTIONS)(function)
        self.threaded = threaded
        # A renamed copy: Numba's on-disk cache is keyed by the function's name and would
        # otherwise hand one variant's machine code to the other.
        self.plain = njit(parallel=False, **_OPTIONS)(_renamed(function, "plain"))

    def threads(self, work, parallel=True):
        """Threads for a call with ``work``: 0 for the plain compile, else how many the parallel one uses."""
        # Asked on every call, plain ones too: it is what keeps the view of the machine (and BLAS's
        # thread count, see sparana._threads) fresh while a dense model trains.
        threads = _threads.threads_for(work, PARALLEL_WORK, limit=numba.config.NUMBA_NUM_THREADS)
        return threads if threads > 1 and self.threaded and parallel else 0

    def run(self, threads, *args):
        """Run on ``args`` with ``threads`` from :meth:`threads` (the caller's own Numba thread count
        is left as it was)."""
        if threads == 0:
            return self.plain(*args)
        before = numba.get_num_threads()
        if before == threads:
            return self.parallel(*args)
        numba.set_num_threads(threads)
        try:
            return self.parallel(*args)
        finally:
            numba.set_num_threads(before)

    def __call__(self, work, *args, parallel=True):
        """Run on ``args``: in parallel when ``work`` is large and ``parallel``, else on one thread."""
        return self.run(self.threads(work, parallel), *args)


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


_BIAS_ACTIVATION = _Kernel(_bias_activation, threaded=False)


def bias_activation(z, bias, relu):
    _BIAS_ACTIVATION(0, z, bias, relu)


def _relu_backward(grad, outputs, scale):
    n, batch = grad.shape
    for k in prange(n):
        g = grad[k]
        a = outputs[k]
        for j in range(batch):
            g[j] = g[j] * scale if a[j] > 0 else 0


_RELU_BACKWARD = _Kernel(_relu_backward, threaded=False)


def relu_backward(grad, outputs, scale=1.0):
    _RELU_BACKWARD(0, grad, outputs, grad.dtype.type(scale))


def _row_sums(a, out):
    n, batch = a.shape
    for k in prange(n):
        row = a[k]
        total = out.dtype.type(0)
        for j in range(batch):
            total += row[j]
        out[k] = total


_ROW_SUMS = _Kernel(_row_sums, threaded=False)


def row_sums(a, out):
    # Each layer's bias gradient; NumPy's sum over the last axis took 5x as long (30 us for 1,000 x 128).
    _ROW_SUMS(0, a, out)


# ------------------------------------------------------------------ sparse products

def _elements_per_tile(array_type):
    return TILE_BYTES // (array_type.dtype.bitwidth // 8)


def _constant_width(tile_bytes):
    """An intrinsic giving ``tile_bytes`` in elements of an array's dtype, as a compile-time constant
    (so that LLVM unrolls and vectorises the loops over a tile and keeps the tile's sums in registers)."""

    @intrinsic
    def width(typingctx, array):
        value = tile_bytes // (array.dtype.bitwidth // 8)

        def codegen(context, builder, signature, args):
            return context.get_constant(types.intp, value)

        return types.intp(array), codegen

    return width


_tile_width = _constant_width(TILE_BYTES)
# Half a tile: the columns of a batch of 128 split between two threads (see sparana.kernels.cpu_step).
_half_tile_width = _constant_width(TILE_BYTES // 2)


@intrinsic
def _tile_on_stack(typingctx, array):
    """A pointer to TILE_BYTES of ``array``'s dtype on the calling thread's stack (never escapes it,
    so that LLVM may keep it in registers)."""
    width = _elements_per_tile(array)

    def codegen(context, builder, signature, args):
        return cgutils.alloca_once(builder, context.get_value_type(array.dtype), size=width)

    return types.CPointer(array.dtype)(array), codegen


@njit(inline="always", fastmath=True)
def _add_entries(acc, n, start, end, perm, data, indices, x, c0):
    """acc[:n] += data[p] * x[indices[p], c0:c0 + n] for the entries p in [start, end), four a pass
    (one load and store of ``acc`` for four entries when it lives in memory).

    Inlined where it is called, so that LLVM sees a constant ``n`` for a whole tile and keeps
    ``acc`` in registers.
    """
    p = start
    while p + 3 < end:
        if perm is None:
            w0, w1, w2, w3 = data[p], data[p + 1], data[p + 2], data[p + 3]
        else:
            w0, w1, w2, w3 = data[perm[p]], data[perm[p + 1]], data[perm[p + 2]], data[perm[p + 3]]
        x0, x1 = x[indices[p], c0:c0 + n], x[indices[p + 1], c0:c0 + n]
        x2, x3 = x[indices[p + 2], c0:c0 + n], x[indices[p + 3], c0:c0 + n]
        for j in range(n):
            acc[j] += (w0 * x0[j] + w1 * x1[j]) + (w2 * x2[j] + w3 * x3[j])
        p += 4
    while p < end:
        w = data[p] if perm is None else data[perm[p]]
        xr = x[indices[p], c0:c0 + n]
        for j in range(n):
            acc[j] += w * xr[j]
        p += 1


@njit(inline="always", fastmath=True)
def _finish_row(row, acc, n, relu, zero, gate):
    """row[:n] = acc[:n], or its ReLU; or, with a ``gate`` row, acc[j] where gate[j] > 0 and 0
    elsewhere (a gradient through the ReLU whose outputs ``gate`` holds)."""
    if gate is not None:
        for j in range(n):
            row[j] = acc[j] if gate[j] > 0 else zero
    elif relu:
        for j in range(n):
            row[j] = max(acc[j], zero)
    else:
        for j in range(n):
            row[j] = acc[j]


@njit(inline="always", fastmath=True)
def _spmm_tile(first, last, j0, width, tile, indptr, indices, perm, data, x, bias, relu, out, gate):
    """Columns j0 to j0 + ``width`` (a constant: the sums stay in registers) of rows ``first`` to ``last``."""
    zero = out.dtype.type(0)
    for k in range(first, last):
        b = zero if bias is None else bias[k]
        for j in range(width):
            tile[j] = b
        _add_entries(tile, width, indptr[k], indptr[k + 1], perm, data, indices, x, j0)
        _finish_row(out[k, j0:j0 + width], tile, width, relu, zero, None if gate is None else gate[k, j0:j0 + width])


@njit(**_OPTIONS)
def _spmm_rows(first, last, indptr, indices, perm, data, x, batch, bias, relu, out, gate):
    """Rows ``first`` to ``last`` of :func:`_spmm` (``gate``: see :func:`_finish_row`; None there):
    whole tiles, then half a tile, then the rest of the batch with its sums in the output row.

    A function of its own rather than the body of the ``prange`` loop: Numba compiles the body of
    a parallel loop into code that LLVM vectorises less well (a third slower here).
    """
    width, half = _tile_width(x), _half_tile_width(x)
    tile = numba.carray(_tile_on_stack(x), width)
    j0 = 0
    while j0 + width <= batch:
        _spmm_tile(first, last, j0, width, tile, indptr, indices, perm, data, x, bias, relu, out, gate)
        j0 += width
    if j0 + half <= batch:
        _spmm_tile(first, last, j0, half, tile, indptr, indices, perm, data, x, bias, relu, out, gate)
        j0 += half
    if j0 == batch:
        return
    zero = out.dtype.type(0)
    for k in range(first, last):
        row = out[k, j0:batch]
        row[:] = zero if bias is None else bias[k]
        _add_entries(row, row.size, indptr[k], indptr[k + 1], perm, data, indices, x, j0)
        _finish_row(row, row, row.size, relu, zero, None if gate is None else gate[k, j0:batch])


def _spmm(blocks, indptr, indices, perm, data, x, batch, bias, relu, out):
    """out[k, :batch] = sum_p data[p] x[indices[p], :batch] (+ bias[k], ReLU) over the entries p of row k.

    ``perm`` (or None) maps each entry to its value: ``data[perm[p]]``, the transpose's values.
    ``perm`` and ``bias`` are None or not at compile time: Numba compiles one version for each use,
    without the tests in the inner loops (which would cost a third of the speed).
    """
    for block in prange(blocks.size - 1):
        _spmm_rows(blocks[block], blocks[block + 1], indptr, indices, perm, data, x, batch, bias, relu, out, None)


_SPMM = _Kernel(_spmm)


def _often_picked(a, nnz):
    """Whether ``nnz`` stored entries pick each row of ``a`` often (32 times or more on average):
    only then does keeping a tile of ``a`` in the cache pay for the work of tiling it."""
    return nnz >= 32 * a.shape[0]


def _tileable(a, nnz):
    """``a``, the operand whose rows the stored entries pick, C-contiguous; copied into rows padded
    by one cache line when its rows are a multiple of 4 KB apart, span several tiles and are
    picked often: such rows fall into a few sets of the cache and a tile of them would not stay
    in it. The kernels take the batch size separately and ignore the padding. (Measured at 95%
    sparsity, batch 1,024: 1.5x faster with the copy; at 99%, or 2 KB apart, the copy costs more
    than it saves.)"""
    a = np.ascontiguousarray(a)
    row_bytes = a.shape[1] * a.itemsize
    if row_bytes % 4096 or row_bytes <= TILE_BYTES or not _often_picked(a, nnz):
        return a
    padded = aligned_empty((a.shape[0], a.shape[1] + ALIGNMENT // a.itemsize), a.dtype)
    padded[:, :a.shape[1]] = a
    return padded


def _products(kernel, pattern, batch, transposed, *args):
    """Run a sparse product over row blocks of about equal work, one or more per thread."""
    threads = kernel.threads(pattern.nnz * batch)
    blocks = pattern.row_blocks(max(threads, 1) * BLOCKS_PER_THREAD, transposed)
    kernel.run(threads, blocks, *args)


def spmm(pattern: SparsePattern, data, x, bias, relu, out):
    batch = x.shape[1]
    _products(_SPMM, pattern, batch, False, pattern.indptr, pattern.indices, None, data,
              _tileable(x, pattern.nnz), batch, bias, bool(relu and bias is not None), out)


def spmm_t(pattern: SparsePattern, data, grad, out):
    batch = grad.shape[1]
    _products(_SPMM, pattern, batch, True, pattern.t_indptr, pattern.t_indices, pattern.perm, data,
              _tileable(grad, pattern.nnz), batch, None, False, out)


@njit(inline="always", fastmath=True)
def _add_dots(out, gr, n, start, end, indices, x, c0):
    """out[p] += gr[:n] . x[indices[p], c0:c0 + n] for the entries p in [start, end): four dot
    products a pass share each load of ``gr`` (inlined, as :func:`_add_entries`)."""
    zero = out.dtype.type(0)
    p = start
    while p + 3 < end:
        x0, x1 = x[indices[p], c0:c0 + n], x[indices[p + 1], c0:c0 + n]
        x2, x3 = x[indices[p + 2], c0:c0 + n], x[indices[p + 3], c0:c0 + n]
        a0 = a1 = a2 = a3 = zero
        for j in range(n):
            g = gr[j]
            a0 += g * x0[j]
            a1 += g * x1[j]
            a2 += g * x2[j]
            a3 += g * x3[j]
        out[p] += a0
        out[p + 1] += a1
        out[p + 2] += a2
        out[p + 3] += a3
        p += 4
    while p < end:
        xr = x[indices[p], c0:c0 + n]
        acc = zero
        for j in range(n):
            acc += gr[j] * xr[j]
        out[p] += acc
        p += 1


@njit(inline="always", fastmath=True)
def _sddmm_tile(first, last, j0, width, indptr, indices, grad, x, out):
    for k in range(first, last):
        _add_dots(out, grad[k, j0:j0 + width], width, indptr[k], indptr[k + 1], indices, x, j0)


@njit(**_OPTIONS)
def _sddmm_rows(first, last, indptr, indices, grad, x, batch, tiled, out):
    """Rows ``first`` to ``last`` of :func:`_sddmm` (a function of its own, as :func:`_spmm_rows`)."""
    width, half = _tile_width(x), _half_tile_width(x)
    out[indptr[first]:indptr[last]] = 0
    j0 = 0
    if tiled:
        while j0 + width <= batch:
            _sddmm_tile(first, last, j0, width, indptr, indices, grad, x, out)
            j0 += width
        if j0 + half <= batch:
            _sddmm_tile(first, last, j0, half, indptr, indices, grad, x, out)
            j0 += half
    if j0 == batch:
        return
    for k in range(first, last):  # the rest of the batch
        _add_dots(out, grad[k, j0:batch], batch - j0, indptr[k], indptr[k + 1], indices, x, j0)


def _sddmm(blocks, indptr, indices, grad, x, batch, tiled, out):
    """out[p] = grad[k, :batch] . x[indices[p], :batch] for the entries p of row k; over tiles of the
    batch when ``tiled`` (else each dot product in one pass: each tile costs a horizontal sum per
    entry, which only pays when the rows of ``x`` are picked often enough to be worth caching)."""
    for block in prange(blocks.size - 1):
        _sddmm_rows(blocks[block], blocks[block + 1], indptr, indices, grad, x, batch, tiled, out)


_SDDMM = _Kernel(_sddmm)


def sddmm(pattern: SparsePattern, grad, x, out):
    batch = grad.shape[1]
    _products(_SDDMM, pattern, batch, False, pattern.indptr, pattern.indices, np.ascontiguousarray(grad),
              _tileable(x, pattern.nnz), batch, _often_picked(x, pattern.nnz), out)


# ------------------------------------------------------------------ rewiring

@njit(nogil=True, cache=True)
def unstored_above(block, indptr, indices, first_row, threshold, keys, scores):
    """For RigL's ranking (sparana.kernels.rewiring): the positions (flat in ``block``) and
    magnitudes of the entries with |value| >= ``threshold`` that the pattern does not store (its
    rows from ``first_row``), in one pass; their number, or -1 when more than ``keys`` holds.
    Sixteen entries are tested at once, and only sixteen with a candidate looked at one by one.
    (No fastmath: a NaN is never a candidate.)"""
    found = 0
    rows, n_in = block.shape
    for r in range(rows):
        p, end = indptr[first_row + r], indptr[first_row + r + 1]
        row = block[r]
        for c0 in range(0, n_in, 16):
            chunk = row[c0:min(c0 + 16, n_in)]
            hits = 0
            for c in range(chunk.size):
                hits += abs(chunk[c]) >= threshold
            if hits == 0:
                continue
            for c in range(chunk.size):
                value = abs(chunk[c])
                if not value >= threshold:
                    continue
                column = c0 + c
                while p < end and indices[p] < column:
                    p += 1
                if p < end and indices[p] == column:
                    continue
                if found == keys.size:
                    return -1
                keys[found] = r * n_in + column
                scores[found] = value
                found += 1
    return found



# Optimizer steps: the rules of sparana.kernels.rules compiled for one entry, run over every entry
# (or every indexed one). Each entry is independent, so the loops split freely across threads.

def _rules_version(*functions):
    """A copy of each loop named after the rules' code: Numba's cache checks only this file, and
    would otherwise keep serving the machine code of a rule edited since."""
    code = repr([(r.__code__.co_code, r.__code__.co_consts, r.__code__.co_names) for r in (rules.adam, rules.sgd)])
    tag = f"{zlib.crc32(code.encode()):08x}"
    return [_renamed(function, tag) for function in functions]


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
    _Kernel(loop) for loop in _rules_version(_adam_all, _adam_indexed, _sgd_all, _sgd_indexed))


def adam_update(w, g, m, v, index, step, parallel=True):
    scalars = step.scalars(w.dtype)
    if index is None:
        _ADAM_ALL(w.size, w, g, m, v, scalars, parallel=parallel)
    else:
        _ADAM_INDEXED(index.size, w, g, index, m, v, scalars, parallel=parallel)


@functools.lru_cache(maxsize=None)
def _no_velocity(dtype):
    """Without momentum the SGD loops read this one zero for every entry's velocity (and never write it)."""
    return np.zeros(1, dtype=dtype)


def sgd_update(w, g, velocity, index, step, parallel=True):
    use_momentum = velocity is not None
    if not use_momentum:
        velocity = _no_velocity(w.dtype)
    scalars = step.scalars(w.dtype)
    if index is None:
        _SGD_ALL(w.size, w, g, velocity, use_momentum, scalars, parallel=parallel)
    else:
        _SGD_INDEXED(index.size, w, g, index, velocity, use_momentum, scalars, parallel=parallel)
