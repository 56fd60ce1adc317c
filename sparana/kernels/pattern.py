"""The fixed non-zero pattern of a sparse layer and the index arrays its kernels need."""

from __future__ import annotations

import numpy as np
import scipy.sparse

from .._backend import to_host as _host


class SparsePattern:
    """Index arrays of a CSR matrix of shape (n_out, n_in), built once per pattern.

    ``indptr``/``indices``: the CSR structure (sorted column indices).
    ``rows``: the row of every stored entry (COO rows, in CSR order).
    ``t_indptr``/``t_indices``/``perm``: the same pattern as CSR of the
    transpose (i.e. CSC), where ``perm[q]`` is the CSR position of the q-th
    transposed entry, so that ``data[perm]`` are the transpose's values.
    All arrays live on the device of ``xp``; indices are int32 (half the memory
    traffic of int64) unless a dimension or the number of entries needs int64.
    The transpose is built once here, so that the input gradient (``spmm_t``)
    runs over the rows of the transpose as the forward product runs over the
    rows of the matrix: each thread writes its own output rows, no atomics.
    """

    def __init__(self, indptr, indices, shape, xp=np):
        indptr = np.asarray(_host(indptr), dtype=np.int64)
        indices = np.asarray(_host(indices), dtype=np.int64)
        n_out, n_in = (int(s) for s in shape)
        if indptr.shape != (n_out + 1,) or indptr[0] != 0 or indptr[-1] != indices.size:
            raise ValueError(f"CSR indptr of length {n_out + 1} ending at {indices.size} expected, "
                             f"got length {indptr.size} ending at {indptr[-1] if indptr.size else None}")
        if indices.size and (indices.min() < 0 or indices.max() >= n_in):
            raise ValueError(f"CSR column indices must lie in [0, {n_in}), got [{indices.min()}, {indices.max()}]")
        rows = np.repeat(np.arange(n_out, dtype=np.int64), np.diff(indptr))
        if indices.size > 1:
            keys = rows * n_in + indices
            if np.any(np.diff(keys) <= 0):
                raise ValueError("CSR column indices must be sorted and free of duplicates within each row")
        transpose = scipy.sparse.csr_matrix(
            (np.arange(indices.size, dtype=np.int64), indices, indptr), shape=(n_out, n_in)).tocsc()
        transpose.sort_indices()
        self.shape = (n_out, n_in)
        self.nnz = int(indices.size)
        index = np.int32 if max(n_out, n_in, self.nnz) < 2**31 - 1 else np.int64
        self.indptr = xp.asarray(indptr.astype(index))
        self.indices = xp.asarray(indices.astype(index))
        self.rows = xp.asarray(rows.astype(index))
        self.t_indptr = xp.asarray(transpose.indptr.astype(index))
        self.t_indices = xp.asarray(transpose.indices.astype(index))
        self.perm = xp.asarray(transpose.data.astype(index))
        self._blocks = {}

    def row_blocks(self, count, transposed=False):
        """Bounds (``count`` + 1 row numbers) of ``count`` consecutive row blocks of about equal work.

        The rows are those of the matrix, or of its transpose when ``transposed``. A row's work is
        its stored entries plus one (writing the row costs about as much as one entry), so that
        threads given one block each finish together. Host arrays, cached per pattern.
        """
        key = (int(count), bool(transposed))
        bounds = self._blocks.get(key)
        if bounds is None:
            indptr = _host(self.t_indptr if transposed else self.indptr).astype(np.int64)
            work = indptr + np.arange(indptr.size)  # cumulative work up to each row
            targets = np.linspace(0, work[-1], key[0] + 1)
            bounds = np.searchsorted(work, targets).astype(np.int64)
            bounds[0], bounds[-1] = 0, indptr.size - 1
            bounds = self._blocks[key] = np.maximum.accumulate(bounds)
        return bounds

    def keys(self):
        """Position of every stored entry in the dense (n_in x n_out) weight matrix, flattened.

        A host array, computed once per pattern (patterns never change): read-only.
        """
        if getattr(self, "_keys", None) is None:
            keys = _host(self.indices).astype(np.int64) * self.shape[0] + _host(self.rows)
            keys.flags.writeable = False
            self._keys = keys
        return self._keys

