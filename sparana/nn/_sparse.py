"""Sparse layers: weights held in CSR, memory and time proportional to the stored entries.

Weights are a CSR matrix of shape (n_out, n_in). The forward pass is a sparse-dense product
(SpMM), the weight gradient is computed only at the stored entries (SDDMM) and never as a dense
matrix, and the input gradient is a transposed SpMM. The pattern changes only by pruning
(:meth:`SparseLayer.keep_only`) or rewiring (:meth:`SparseLayer.rewire`); each change gives it a new
serial number and records where every new entry came from, so that per-entry data (optimizer state,
statistics, masks) can follow it (:meth:`SparseLayer.carry`).
"""

from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse

from .._backend import BackendError, to_host
from ..kernels import SparsePattern
from ._layer import Layer

_SERIALS = itertools.count(1)


class SparseLayer(Layer):
    """A layer whose weights are a CSR matrix (n_out, n_in); its pattern changes only by pruning or rewiring."""

    is_sparse = True

    def __init__(self, size=None, weights=None, biases=None, dropout=None, inputs=None, learning_rate=None):
        super().__init__(size, weights, biases, dropout, inputs, learning_rate)
        self._pattern = None
        self._data = None
        self._serial = 0
        self._lineage = None  # [previous serial, source of every entry (its index there, or -1), kept entries]

    @property
    def weights(self):
        """The CSR matrix (n_out, n_in) on the layer's device; shares memory with the layer."""
        if self._pattern is None:
            return None
        p = self._pattern
        if self.backend.is_gpu and p.indices.dtype == np.int64:
            raise BackendError(f"this layer's {p.nnz:,} stored weights of shape {p.shape} need int64 indices, "
                               "which CuPy's sparse matrices do not hold (int32 only): it trains on the GPU, but "
                               "read its weights with to_scipy() (on the host) instead")
        return self.backend.sp.csr_matrix((self._data, p.indices, p.indptr), shape=p.shape)

    @weights.setter
    def weights(self, value):
        self.set_parameters(value, None)

    @property
    def values(self):
        """The stored weight values (the CSR data vector, in CSR order)."""
        return self._data

    @property
    def pattern(self):
        """The :class:`~sparana.kernels.SparsePattern` (index arrays) of the stored entries."""
        return self._pattern

    @property
    def nnz(self):
        """Number of stored weights."""
        return self._pattern.nnz

    @property
    def prune_mask(self):
        """Always None: a sparse layer's pattern is its mask."""
        return None

    def set_parameters(self, weights, biases=None):
        """Load a CSR (or any sparse or dense) matrix of shape (n_out, n_in) and optional biases.

        A dense matrix stores its non-zero entries; a sparse matrix keeps its pattern.
        """
        host = to_host(weights)
        if scipy.sparse.issparse(host):
            matrix = scipy.sparse.csr_matrix(host, dtype=self.backend.dtype, copy=True)
        else:
            dense = np.asarray(host)
            if dense.ndim != 2:
                raise ValueError(f"sparse layer weights must be a 2-D (n_out, n_in) matrix, got shape {dense.shape}")
            matrix = scipy.sparse.csr_matrix(dense.astype(self.backend.dtype))
        matrix.sum_duplicates()
        matrix.sort_indices()
        n_out, n_in = matrix.shape
        if self.input_size is not None and n_in != self.input_size:
            raise ValueError(f"sparse weights of shape ({self._size or n_out}, {self.input_size}) expected "
                             f"(n_out, n_in; this layer has {self.input_size} inputs), got {matrix.shape}")
        if self._size is not None and n_out != self._size:
            raise ValueError(f"sparse weights with {self._size} rows (the layer size) expected, got {matrix.shape}")
        self._size, self.input_size = int(n_out), int(n_in)
        self._set_pattern(matrix.indptr, matrix.indices, matrix.data)
        self._load_biases(biases)

    def _set_pattern(self, indptr, indices, data, source=None):
        """A new pattern; ``source[p]``: the index in the current pattern of new entry p (-1: new)."""
        xp = self.backend.xp
        self._pattern = SparsePattern(indptr, indices, (self._size, self.input_size), xp=xp)
        self._data = self.backend.asfloat(data)
        self._training_mask = None
        self.grad_weights = None
        self._version += 1
        previous, self._serial = self._serial, next(_SERIALS)
        # (previous serial, source of every entry, and where the kept ones land: computed when first asked)
        self._lineage = None if source is None else [previous, np.asarray(source, dtype=_index_type(source)), None]

    @property
    def pattern_serial(self):
        """The serial number of the current pattern (see the module docstring)."""
        return self._serial

    def carry(self, array, serial, fill=0):
        """``array`` (one value per entry of the pattern ``serial``) on the current pattern.

        Entries that the last pruning or rewiring kept keep their value, new ones get ``fill``.
        Returns ``array`` itself when the pattern is still ``serial``, and None when the layer's
        pattern changed otherwise since (more than once, or by ``set_parameters``).
        """
        if serial == self._serial:
            return array
        if self._lineage is None or self._lineage[0] != serial:
            return None
        source = self._lineage[1]
        xp = self.backend.xp if not isinstance(array, np.ndarray) else np
        if self._lineage[2] is None:  # (once per change: every array that follows it uses the same)
            kept = source >= 0
            self._lineage[2] = np.flatnonzero(kept), source[kept]
        where, origin = self._lineage[2]
        result = xp.full(source.shape, fill, dtype=array.dtype)
        result[xp.asarray(where)] = array.reshape(-1)[xp.asarray(origin)]
        return result

    def rewire(self, indptr, indices, data, source):
        """Replace the pattern by the CSR (``indptr``, ``indices``) holding ``data``, in place.

        ``source[p]`` is the index in the current pattern of new entry p, or -1 for a connection
        that was not stored: optimizer state, statistics and the training mask follow through it
        (a new entry is trained, with zero optimizer state). Used by :class:`sparana.Rewirer`.
        """
        source = np.asarray(source)
        if source.shape != (np.asarray(indices).size,):
            raise ValueError(f"one source index per new entry expected ({np.asarray(indices).size}), "
                             f"got shape {source.shape}")
        mask = self._training_mask
        serial = self._serial
        self._set_pattern(indptr, indices, data, source)
        if mask is not None:
            self._training_mask = self.carry(mask, serial, fill=True)

    def _move_to(self, backend):
        host = self.to_scipy()
        mask = to_host(self._training_mask)
        biases = to_host(self._biases)
        self.backend = backend
        serial, lineage = self._serial, self._lineage
        self._set_pattern(host.indptr, host.indices, host.data)
        # The same entries on another device: what follows the pattern (optimizer state, statistics) still fits.
        self._serial, self._lineage = serial, lineage
        self._biases = backend.asfloat(biases)
        if mask is not None:
            self._training_mask = backend.asarray(mask)
        self._clear_cache()

    def to_scipy(self):
        """A host SciPy CSR copy of the weights (n_out, n_in)."""
        p = self._pattern
        return scipy.sparse.csr_matrix((to_host(self._data, copy=True), to_host(p.indices, copy=True),
                                        to_host(p.indptr, copy=True)), shape=p.shape)

    def dense_weights(self):
        """W as a dense (n_in, n_out) array on the layer's device (the dense layers' orientation)."""
        return self.weights.T.toarray()

    def value_keys(self):
        """Flat position of every stored entry in the dense (n_in, n_out) matrix."""
        return self._pattern.keys()

    def keep_only(self, keep):
        """Prune: remove the stored entries where ``keep`` is False from the pattern."""
        keep = self._as_mask(keep, "keep mask")
        keep_host = to_host(keep)
        p = self._pattern
        rows = to_host(p.rows)[keep_host]
        indices = to_host(p.indices)[keep_host]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=self._size))])
        self.rewire(indptr, indices, self._data[keep], np.flatnonzero(keep_host))  # the training mask follows

    def forward(self, x, train=False):
        # The kernels read the inputs row by row (a feature across the batch): make them contiguous
        # once here, so that the backward pass (SDDMM) reuses the same copy. The copy goes into a
        # buffer that the layer keeps (one for training, whose backward pass reads it, one for
        # evaluation): a fresh array of a few MB each call cost more in page faults than the copy
        # itself (the allocator hands such arrays back to the system), 3.5 ms of an 8 ms
        # inference of the 95% model on 1,000 images. So one layer's evaluations are not
        # re-entrant: two threads evaluating the same model at once would share that buffer.
        if self.backend.is_gpu:
            x = self.backend.xp.ascontiguousarray(x)
        elif not x.flags.c_contiguous:
            copy = self._buffer("inputs" if train else "evaluation inputs", x.shape)
            copy[...] = x
            x = copy
        return super().forward(x, train)

    def _product(self, values, x, out, relu):
        self.backend.kernels.spmm(self._pattern, values, x, self._biases, relu, out)

    def _weight_gradient(self, grad_z, x, out):
        self.backend.kernels.sddmm(self._pattern, grad_z, x, out)

    def _input_gradient(self, values, grad_z, out):
        self.backend.kernels.spmm_t(self._pattern, values, grad_z, out)


def _index_type(source):
    return np.int32 if np.asarray(source).size < 2**31 - 1 else np.int64


class SparseReluLayer(SparseLayer):
    """Sparse layer with a ReLU activation (``sparse_relu_layer`` in the original documentation)."""

    activation = "relu"


class SparseLinearLayer(SparseLayer):
    """Sparse layer with no activation (``sparse_linear_layer``)."""

    activation = "linear"


class SparseSoftmaxLayer(SparseLayer):
    """Sparse layer with a softmax over its units (``sparse_softmax_layer``)."""

    activation = "softmax"


SPARSE_LAYERS = {cls.activation: cls for cls in (SparseReluLayer, SparseLinearLayer, SparseSoftmaxLayer)}
