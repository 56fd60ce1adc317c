"""The CUDA kernels themselves (see :mod:`.cuda`): imported only when a kernel first runs.

Module-level functions, so that Numba's CUDA simulator can run them too.
"""

from numba import cuda, float64

from .cuda import LANES  # threads summing one entry's products in entry_dots (a warp)
ENTRIES = 8  # entries per block of entry_dots


@cuda.jit
def rows_product(indptr, indices, data, perm, use_perm, x, bias, use_bias, relu, zero, out):
    """out[r, b] = sum over row r's entries k of data[k or perm[k]] x[indices[k], b] (+ bias[r], ReLU).

    One block per output row (grid x) and tile of the batch (grid y); ``zero`` has the float type
    the sums are made in.
    """
    row = cuda.blockIdx.x
    column = cuda.blockIdx.y * cuda.blockDim.x + cuda.threadIdx.x
    if column >= out.shape[1]:
        return
    total = zero
    for k in range(indptr[row], indptr[row + 1]):
        value = data[perm[k]] if use_perm else data[k]
        total += value * x[indices[k], column]
    if use_bias:
        total += bias[row]
    if relu and total < zero:
        total = zero
    out[row, column] = total


@cuda.jit
def entry_dots(rows, indices, grad, x, out):
    """out[p] = sum_b grad[rows[p], b] x[indices[p], b]: ENTRIES entries per block, LANES threads each.

    Each thread sums a strided part of the batch; the partial sums meet in shared memory (float64:
    one shared type for every float type) in a tree.
    """
    sums = cuda.shared.array((ENTRIES, LANES), dtype=float64)
    lane, slot = cuda.threadIdx.x, cuda.threadIdx.y
    entry = cuda.blockIdx.x * ENTRIES + slot
    total = 0.0
    if entry < out.shape[0]:
        row, column = rows[entry], indices[entry]
        for b in range(lane, grad.shape[1], LANES):
            total += grad[row, b] * x[column, b]
    sums[slot, lane] = total
    cuda.syncthreads()
    width = LANES // 2
    while width > 0:
        if lane < width:
            sums[slot, lane] += sums[slot, lane + width]
        cuda.syncthreads()
        width //= 2
    if lane == 0 and entry < out.shape[0]:
        out[entry] = sums[slot, 0]
