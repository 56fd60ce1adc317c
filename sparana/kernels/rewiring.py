"""Array work of a rewiring step (dynamic sparse training): which stored weights to drop, where to
grow new ones, and the new CSR arrays. Host NumPy, vectorised; O(stored weights) per layer, except
the dense-gradient ranking, which is one dense product per block of rows and never holds more
than a block of the dense gradient.

Positions are flat row-major indices ``row * n_in + col`` of a layer's (n_out, n_in) CSR matrix;
the stored positions of a CSR pattern (sorted column indices) are in increasing order, so that
membership is a binary search. :mod:`sparana.sparsity._rewire` decides how many to drop and
calls these; the tests check each against a plain dense computation.
"""

from __future__ import annotations

import numpy as np

from .cpu import unstored_above

# Entries of the dense gradient held at once by ``top_gradient_positions`` (float32: 16 MB).
BLOCK_ELEMENTS = 1 << 22
# Samples drawn from a block to set a threshold below its top entries.
SAMPLE = 16384


def stored_positions(indptr, indices, n_in):
    """Increasing flat positions of the stored entries of a CSR pattern (host int64)."""
    indptr = np.asarray(indptr, dtype=np.int64)
    rows = np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))
    return rows * n_in + np.asarray(indices, dtype=np.int64)


def is_member(sorted_keys, wanted):
    """Boolean array: whether each of ``wanted`` is in the increasing array ``sorted_keys``."""
    if not sorted_keys.size:
        return np.zeros(np.shape(wanted), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_keys, wanted), sorted_keys.size - 1)
    return sorted_keys[at] == wanted


def smallest(scores, count):
    """Indices of the ``count`` smallest ``scores`` (ties in any order), O(n)."""
    count = int(count)
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    if count >= scores.size:
        return np.arange(scores.size)
    return np.argpartition(scores, count - 1)[:count]


def drop_smallest_magnitude(values, count):
    """Keep mask: False for the ``count`` stored weights smallest in magnitude (RigL's drop)."""
    keep = np.ones(values.size, dtype=bool)
    keep[smallest(np.abs(values), count)] = False
    return keep


def drop_smallest_signed(values, fraction):
    """Keep mask of SET's drop: the ``fraction`` of the non-negative weights that are smallest, and
    the ``fraction`` of the negative weights closest to zero, each counted (rounded) on its own."""
    keep = np.ones(values.size, dtype=bool)
    for side in (np.flatnonzero(values >= 0), np.flatnonzero(values < 0)):
        count = int(round(fraction * side.size))
        keep[side[smallest(np.abs(values[side]), count)]] = False
    return keep


def free_positions(rng, size, count, taken):
    """``count`` distinct positions in [0, size), in increasing order, uniformly at random among those
    not in ``taken`` (increasing). Rejection sampling when most positions are free (draws, minus
    repeats and taken ones, then a uniform subset of those), a draw from the free positions listed
    otherwise."""
    count = int(count)
    free = size - taken.size
    if count > free:
        raise ValueError(f"at most {free} free positions to grow into, {count} asked")
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    if free < 4 * count or size <= 1 << 16:
        open_ = np.ones(size, dtype=bool)
        open_[taken] = False
        return np.sort(rng.choice(np.flatnonzero(open_), size=count, replace=False))
    found = np.zeros(0, dtype=np.int64)
    while found.size < count:
        draw = rng.integers(0, size, size=int(count * size / free * 1.1) + 64, dtype=np.int64)
        draw.sort()
        found = _distinct(np.concatenate([found, draw[~is_member(taken, draw)]]))
    return np.sort(found[rng.choice(found.size, size=count, replace=False)]) if found.size > count else found


def _distinct(values):
    """The distinct values of ``values``, in increasing order (np.unique without its hashing)."""
    values = np.sort(values)
    if values.size > 1:
        values = values[np.concatenate(([True], values[1:] != values[:-1]))]
    return values


def _block_top(scores, count):
    """Indices of the ``count`` largest of the flat ``scores`` (all of them when fewer), O(n)."""
    if count >= scores.size:
        return np.arange(scores.size)
    candidates = None
    if scores.size > 8 * count and scores.size > 4 * SAMPLE:
        sample = scores[:: scores.size // SAMPLE]
        # a threshold that leaves about 2 * count entries above it, so that only those are ranked
        q = sample.size - 1 - min(sample.size - 1, int(np.ceil(2.0 * count * sample.size / scores.size)) + 8)
        threshold = np.partition(sample, q)[q]
        above = np.flatnonzero(scores >= threshold)
        if above.size >= count:  # then the top ``count`` all lie above the threshold: exact
            candidates = above
    if candidates is None:
        return np.argpartition(scores, scores.size - count)[scores.size - count:]
    return candidates[np.argpartition(scores[candidates], candidates.size - count)[candidates.size - count:]]


def _threshold(flat, count):
    """A value that about 2 * ``count`` of |flat| lie above (from a sample), or None for a block
    too small to sample."""
    if flat.size <= 8 * count or flat.size <= 4 * SAMPLE:
        return None
    sample = np.abs(flat[:: flat.size // SAMPLE])
    q = sample.size - 1 - min(sample.size - 1, int(np.ceil(2.0 * count * sample.size / flat.size)) + 8)
    return np.partition(sample, q)[q]


def _block_candidates(block, indptr, indices, r0, count):
    """(positions flat in ``block``, |gradient|) of the ``count`` largest entries not stored there
    (all of them when fewer)."""
    flat = block.reshape(-1)
    threshold = _threshold(flat, count)
    if threshold is not None:
        room = min(flat.size, 4 * count + 1024)
        keys, scores = np.empty(room, np.int64), np.empty(room, flat.dtype)
        found = unstored_above(block, indptr, indices, r0, threshold, keys, scores)
        if found >= count:  # then the top ``count`` all lie above the threshold: exact
            top = np.argpartition(scores[:found], found - count)[found - count:]
            return keys[top], scores[top]
    np.abs(flat, out=flat)
    start, end = indptr[r0], indptr[r0 + block.shape[0]]
    local_rows = np.repeat(np.arange(block.shape[0], dtype=np.int64), np.diff(indptr[r0:r0 + block.shape[0] + 1]))
    flat[local_rows * block.shape[1] + indices[start:end]] = -1.0  # stored: never a candidate
    top = _block_top(flat, count)
    top = top[flat[top] >= 0]
    return top, flat[top]


def top_gradient_positions(grad_z, x, indptr, indices, count, block_elements=BLOCK_ELEMENTS):
    """The ``count`` positions not stored where |grad_z @ x.T| (the dense weight gradient of an
    (n_out, n_in) layer, from dL/dz (n_out, batch) and its inputs x (n_in, batch)) is largest.

    The gradient is computed a block of rows at a time (at most ``block_elements`` entries), and
    only the best ``count`` of each block's entries not stored kept: those above a threshold set
    from a sample of the block, in one pass over it. Returns (positions in increasing order, their
    |gradient|).
    """
    grad_z = np.ascontiguousarray(grad_z)
    x_t = np.ascontiguousarray(x).T
    n_out, n_in = grad_z.shape[0], x_t.shape[1]
    indptr = np.asarray(indptr, dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int64)
    rows_per_block = max(1, int(block_elements) // max(n_in, 1))
    best_keys = np.zeros(0, dtype=np.int64)
    best_scores = np.zeros(0, dtype=grad_z.dtype)
    buffer = np.empty((min(rows_per_block, n_out), n_in), dtype=np.result_type(grad_z, x_t))
    for r0 in range(0, n_out, rows_per_block):
        r1 = min(r0 + rows_per_block, n_out)
        block = buffer[:r1 - r0]
        np.matmul(grad_z[r0:r1], x_t, out=block)
        top, top_scores = _block_candidates(block, indptr, indices, r0, count)
        keys = np.concatenate([best_keys, top + r0 * n_in])
        scores = np.concatenate([best_scores, top_scores])
        keep = _block_top(scores, count)
        best_keys, best_scores = keys[keep], scores[keep]
    order = np.argsort(best_keys)
    return best_keys[order], best_scores[order]


def rebuild(kept_positions, kept_data, kept_source, new_positions, shape):
    """The CSR arrays of the kept entries plus new ones (at zero) of an (n_out, n_in) layer.

    ``kept_positions`` (increasing), ``kept_data`` and ``kept_source`` (their index in the old
    pattern) describe what stays; ``new_positions`` (increasing, none kept) what grows. Returns
    (indptr, indices, data, source, slots): ``source`` is -1 at new entries, ``slots`` where the
    new positions landed in the new arrays.
    """
    n_out, n_in = shape
    new_positions = np.asarray(new_positions, dtype=np.int64)
    if new_positions.size > 1 and np.any(np.diff(new_positions) <= 0):
        raise ValueError("new positions must be distinct and in increasing order")
    slots = np.searchsorted(kept_positions, new_positions) + np.arange(new_positions.size)
    total = kept_positions.size + new_positions.size
    is_new = np.zeros(total, dtype=bool)
    is_new[slots] = True
    old_slots = np.flatnonzero(~is_new)
    positions = np.empty(total, dtype=np.int64)
    positions[slots] = new_positions
    positions[old_slots] = kept_positions
    data = np.zeros(total, dtype=kept_data.dtype)
    data[old_slots] = kept_data
    source = np.full(total, -1, dtype=np.int64)
    source[old_slots] = kept_source
    rows, cols = np.divmod(positions, n_in)
    indptr = np.zeros(n_out + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_out), out=indptr[1:])
    return indptr, cols, data, source, slots
