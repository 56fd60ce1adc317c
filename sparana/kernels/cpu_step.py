"""A whole training step of a sparse MLP as one compiled CPU call.

The model: sparse ReLU layers, then a small dense head (linear or softmax) under the softmax
cross-entropy; the update: Adam or SGD (:mod:`sparana.nn._fused` says when a step takes this path
and binds the layers' arrays to it).

The batch is cut into column groups (:func:`column_groups`), one per thread of Numba's pool, and
each group runs its whole forward and backward pass on one thread, from its own core's cache,
with the row kernels of the layer-by-layer path (:mod:`.cpu`): its inputs transposed into its
activations, the sparse products, the head, the loss and their gradients, each ReLU's derivative
applied as the input gradient is written. Only then do the groups meet: each weight's gradient is
the sum of its groups' parts, added in their order, then updated at once. With the layers' rows
split between the threads instead, as the layer-by-layer kernels split them, half of every
operand of a step came from the other core's cache, and every kernel waited for the slower
thread. What is saved besides is everything between the kernels: the Python of the layers, the
model and the optimizer, and the kernels' launches.

The batch is checked here too, before anything is written to the model: a non-finite input or a
class id out of range returns an error code, and the caller raises the layer-by-layer path's error.
"""

from __future__ import annotations

import types

import numba
import numpy as np
from numba import njit, prange

from .cpu import _OPTIONS, TILE_BYTES, _Kernel, _adam, _rules_version, _sddmm_rows, _sgd, _spmm_rows

# Error codes of a step (0: none).
BAD_INPUT, BAD_LABEL = 1, 2
# Sparse layers a step's tuples hold (see sparana.nn._fused): a deeper model takes the layer-by-layer path.
MAX_LAYERS = 4
# The narrowest column group (bytes of a row): a quarter of a tile of the sparse products.
GROUP_BYTES = TILE_BYTES // 4


def column_groups(batch, dtype):
    """(starts, widths, allocated width) of the column groups a step cuts a batch into: one per thread
    of Numba's pool, at most, each at least GROUP_BYTES wide, their starts a cache line apart.

    Each group runs its forward and backward passes on one thread, from its own core's cache; only
    the weight gradients are added across groups, in their order. So the groups, not the threads,
    fix the rounding: a step computes the same on a busy machine, on one thread, as on a quiet one.
    """
    itemsize = np.dtype(dtype).itemsize
    groups = max(1, min(numba.config.NUMBA_NUM_THREADS, batch * itemsize // GROUP_BYTES))
    line = 64 // itemsize
    width = -(-batch // groups)
    width = -(-width // line) * line
    starts = np.arange(0, batch, width, dtype=np.int64)
    return starts, np.minimum(width, batch - starts), width


def finite_check(inputs):
    """The arguments of the step's check that every input is finite: the inputs' bits as unsigned
    integers, and the bits of the exponent. The check reads the bits: under fastmath (which the
    step's kernels have, and which reaches a function once LLVM inlines it) a test of the
    floating-point value may be folded to "finite"."""
    bits = inputs.reshape(-1).view(np.uint32 if inputs.itemsize == 4 else np.uint64)
    return bits, bits.dtype.type(0x7F800000 if inputs.itemsize == 4 else 0x7FF0000000000000)


@njit(**_OPTIONS)
def _all_finite(bits, exponent):
    """Whether no value has every exponent bit set (infinities and NaNs do)."""
    bad = 0
    for i in range(bits.size):
        bad += (bits[i] & exponent) == exponent
    return bad == 0


@njit(**_OPTIONS)
def _transpose(a, out):
    """out = a.T, 16 rows of ``a`` a pass (so that each pass writes 64 bytes of a row of ``out``)."""
    rows, columns = a.shape
    full = rows - rows % 16
    for j0 in range(0, full, 16):
        for i in range(columns):
            for j in range(16):
                out[i, j0 + j] = a[j0 + j, i]
    for j in range(full, rows):
        for i in range(columns):
            out[i, j] = a[j, i]


@njit(**_OPTIONS)
def _labels_in_range(ids, classes):
    for j in range(ids.size):
        if ids[j] < 0 or ids[j] >= classes:
            return False
    return True


@njit(**_OPTIONS)
def _head_forward(w, b, h, z, batch, softmax):
    """z = w.T h + b over the first ``batch`` columns (w: (n_in, classes), h: (n_in, columns)), then
    the softmax over classes if asked."""
    classes = z.shape[0]
    for c in range(classes):
        z[c, :batch] = b[c]
    for i in range(h.shape[0]):
        hi = h[i]
        for c in range(classes):
            weight = w[i, c]
            zc = z[c]
            for j in range(batch):
                zc[j] += weight * hi[j]
    if not softmax:
        return
    tiny = np.sqrt(np.finfo(z.dtype).tiny)  # (as sparana.nn._activations.without_subnormals)
    for j in range(batch):
        top = z[0, j]
        for c in range(1, classes):
            top = max(top, z[c, j])
        total = z.dtype.type(0)
        for c in range(classes):
            z[c, j] = np.exp(z[c, j] - top)
            total += z[c, j]
        for c in range(classes):
            p = z[c, j] / total
            z[c, j] = p if p >= tiny else 0


@njit(**_OPTIONS)
def _cross_entropy(z, ids, batch, softmax, divisor, grad):
    """Minus the log-likelihood summed over the first ``batch`` columns, and its gradient w.r.t. the
    head's pre-activation (divided by ``divisor``) into ``grad``, as sparana.nn._losses computes
    them: from the log-softmax of a linear head, or from the probabilities of a softmax head."""
    classes = z.shape[0]
    dtype = z.dtype.type
    tiny = np.finfo(z.dtype).tiny
    small = np.sqrt(tiny)
    scale = dtype(1.0 / divisor)
    total = dtype(0)
    for j in range(batch):
        label = ids[j]
        if softmax:
            for c in range(classes):
                grad[c, j] = z[c, j]
            log_p = np.log(max(z[label, j], tiny))
        else:
            top = z[0, j]
            for c in range(1, classes):
                top = max(top, z[c, j])
            sum_exp = dtype(0)
            for c in range(classes):
                sum_exp += np.exp(z[c, j] - top)
            log_sum = np.log(sum_exp)
            for c in range(classes):
                p = np.exp((z[c, j] - top) - log_sum)
                grad[c, j] = p if p >= small else 0
            log_p = (z[label, j] - top) - log_sum
        grad[label, j] -= 1
        total -= log_p
        for c in range(classes):
            grad[c, j] *= scale
    return float(total)


@njit(**_OPTIONS)
def _head_backward(w, h, grad, batch, grad_w, grad_b, grad_h):
    """The head's weight gradient (h grad.T, flat (n_in x classes)) and bias gradient, and the
    gradient of its inputs (w grad) through the ReLU of the layer below (zero where its output is)."""
    classes = grad.shape[0]
    zero = grad.dtype.type(0)
    for c in range(classes):
        total = zero
        for j in range(batch):
            total += grad[c, j]
        grad_b[c] = total
    for i in range(h.shape[0]):
        hi = h[i]
        for c in range(classes):
            gc = grad[c]
            total = zero
            for j in range(batch):
                total += hi[j] * gc[j]
            grad_w[i * classes + c] = total
        out = grad_h[i]
        out[:batch] = zero
        for c in range(classes):
            weight = w[i, c]
            gc = grad[c]
            for j in range(batch):
                out[j] += weight * gc[j]
        for j in range(batch):
            if hi[j] <= 0:
                out[j] = zero


@njit(**_OPTIONS)
def _bias_gradient(grad, batch, out):
    for k in range(grad.shape[0]):
        row = grad[k]
        total = out.dtype.type(0)
        for j in range(batch):
            total += row[j]
        out[k] = total


@njit(**_OPTIONS)
def _group_pass(group, inputs, ids, start, batch, divisor, softmax, layers, indptr, indices, t_indptr, t_indices, perm,
                values, biases, tiled, acts, grads, part_w, part_b, head_w, head_b, head_z, head_grad):
    """The forward and backward passes of one column group: ``batch`` inputs from row ``start`` of
    ``inputs``, their activations in ``acts[l][group]``, the gradients of the loss w.r.t. them in
    ``grads[l][group]``, the sums over the group of the weight and bias gradients in
    ``part_w[l][group]`` and ``part_b[l][group]`` (the head's last). Returns the group's share of
    the loss."""
    _transpose(inputs[start:start + batch], acts[0][group])
    for layer in range(layers):
        _spmm_rows(0, indptr[layer].size - 1, indptr[layer], indices[layer], None, values[layer], acts[layer][group],
                   batch, biases[layer], True, acts[layer + 1][group], None)
    top = acts[layers][group]
    z, grad = head_z[group], head_grad[group]
    _head_forward(head_w, head_b, top, z, batch, softmax)
    loss = _cross_entropy(z, ids[start:start + batch], batch, softmax, divisor, grad)
    _head_backward(head_w, top, grad, batch, part_w[layers][group], part_b[layers][group], grads[layers - 1][group])
    for layer in range(layers - 1, -1, -1):
        grad = grads[layer][group]
        _sddmm_rows(0, indptr[layer].size - 1, indptr[layer], indices[layer], grad, acts[layer][group], batch,
                    tiled[layer], part_w[layer][group])
        _bias_gradient(grad, batch, part_b[layer][group])
        if layer > 0:  # the input gradient, through the ReLU of the layer below
            _spmm_rows(0, t_indptr[layer].size - 1, t_indptr[layer], t_indices[layer], perm[layer], values[layer],
                       grad, batch, None, False, grads[layer - 1][group], acts[layer][group])
    return loss


@njit(inline="always")
def _passes(inputs, bits, exponent, ids, starts, widths, divisor, softmax, layers, indptr, indices, t_indptr,
            t_indices, perm, values, biases, tiled, acts, grads, part_w, part_b, head_w, head_b, head_z, head_grad):
    """Every group's passes, one group a thread; returns (loss, error code), the batch checked first."""
    if not _all_finite(bits, exponent):
        return np.nan, BAD_INPUT
    if not _labels_in_range(ids, head_b.size):
        return np.nan, BAD_LABEL
    groups = starts.size
    losses = np.empty(groups)
    for group in prange(groups):
        losses[group] = _group_pass(group, inputs, ids, starts[group], widths[group], divisor, softmax, layers,
                                    indptr, indices, t_indptr, t_indices, perm, values, biases, tiled, acts, grads,
                                    part_w, part_b, head_w, head_b, head_z, head_grad)
    total = 0.0
    for group in range(groups):  # (in order: the loss does not depend on the threads)
        total += losses[group]
    return total / divisor, 0


@njit(**_OPTIONS)
def _summed(parts, g, start, end):
    """g[start:end] = the groups' parts added in their order; returns that slice (loops from 0 over
    slices: indices LLVM knows are not negative, so that it vectorises them)."""
    out = g[start:end]
    out[:] = parts[0, start:end]
    for group in range(1, parts.shape[0]):
        part = parts[group, start:end]
        for i in range(out.size):
            out[i] += part[i]
    return out


# The rules' updates of entries start to end, from the groups' parts of their gradient. One
# signature for both: (a, b) are Adam's moments, or SGD's velocity twice; ``flag`` is SGD's momentum.

@njit(**_OPTIONS)
def _adam_range(w, parts, g, a, b, flag, start, end, scalars):
    g = _summed(parts, g, start, end)
    w, m, v = w[start:end], a[start:end], b[start:end]
    for i in range(w.size):
        w[i], m[i], v[i] = _adam(w[i], g[i], m[i], v[i], scalars)


@njit(**_OPTIONS)
def _sgd_range(w, parts, g, a, b, flag, start, end, scalars):
    g = _summed(parts, g, start, end)
    w = w[start:end]
    if flag:
        velocity = a[start:end]
        for i in range(w.size):
            w[i], velocity[i] = _sgd(w[i], g[i], velocity[i], scalars)
    else:
        for i in range(w.size):
            w[i], _ = _sgd(w[i], g[i], a[0], scalars)


@njit(inline="always")
def _share(size, piece, pieces):
    return piece * size // pieces, (piece + 1) * size // pieces


@njit(inline="always")
def _update_share(rule, piece, pieces, layers, values, biases, head_w, head_b, part_w, part_b, grad_w, grad_b, state_a,
                  state_b, flag, weight_scalars, bias_scalars, train_biases):
    """Share ``piece`` of ``pieces`` of every array's update by ``rule``: each thread updates its share
    of every layer in one parallel loop (one per array cost a few microseconds each, a sixth of a
    step at 99% sparsity). Without ``train_biases``, the biases' gradients only."""
    for layer in range(layers + 1):
        w = values[layer] if layer < layers else head_w.reshape(-1)
        start, end = _share(w.size, piece, pieces)
        rule(w, part_w[layer], grad_w[layer], state_a[2 * layer], state_b[2 * layer], flag, start, end,
             weight_scalars)
        b = biases[layer] if layer < layers else head_b
        start, end = _share(b.size, piece, pieces)
        if train_biases:
            rule(b, part_b[layer], grad_b[layer], state_a[2 * layer + 1], state_b[2 * layer + 1], flag, start, end,
                 bias_scalars)
        else:
            _summed(part_b[layer], grad_b[layer], start, end)


def _step(inputs, bits, exponent, ids, starts, widths, divisor, softmax, layers, indptr, indices, t_indptr, t_indices,
          perm, values, biases, tiled, acts, grads, part_w, part_b, head_w, head_b, head_z, head_grad, grad_w, grad_b,
          state_a, state_b, flag, weight_scalars, bias_scalars, train_biases, threads):
    """Every group's passes, then the update of every layer by the rule ``_RULE`` (bound per copy
    of this function, below), the gradients summed over the groups (and left in ``grad_w`` and
    ``grad_b``) on the way. ``state_a`` and ``state_b``: per layer (the head last), its weights'
    state then its biases' (see :func:`_adam_range`); returns (loss, error code). Each tuple holds
    :data:`MAX_LAYERS` sparse layers (the rest padding: one compile serves every depth); ``layers``
    of them are the model's."""
    loss, error = _passes(inputs, bits, exponent, ids, starts, widths, divisor, softmax, layers, indptr, indices,
                          t_indptr, t_indices, perm, values, biases, tiled, acts, grads, part_w, part_b, head_w,
                          head_b, head_z, head_grad)
    if error:
        return loss, error
    for piece in prange(threads):
        _update_share(_RULE, piece, threads, layers, values, biases, head_w, head_b, part_w, part_b, grad_w, grad_b,
                      state_a, state_b, flag, weight_scalars, bias_scalars, train_biases)
    return loss, 0


def _with_rule(rule, name):
    """A copy of :func:`_step` that updates by ``rule`` (a global of its own: Numba compiles it in,
    and caches each copy under its own name)."""
    step = types.FunctionType(_step.__code__, {**_step.__globals__, "_RULE": rule}, f"_step_{name}")
    step.__qualname__ = step.__name__
    return step


ADAM_STEP, SGD_STEP = (_Kernel(step) for step in _rules_version(_with_rule(_adam_range, "adam"),
                                                                  _with_rule(_sgd_range, "sgd")))
