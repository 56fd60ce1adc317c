"""Compute kernels: Numba on the CPU (:mod:`.cpu`), CuPy on the GPU (:mod:`.gpu`).

Every backend module provides the same functions with the same arguments:

``bias_activation(z, bias, relu)``
    z += bias[:, None]; ReLU when asked (in place).
``relu_backward(grad, outputs, scale=1.0)``
    grad *= scale * (outputs > 0) (in place).
``row_sums(a, out)``
    out = a.sum(axis=1): a layer's bias gradient from dL/dz.
``spmm(pattern, data, x, bias, relu, out)``
    out = W @ x (+ bias, ReLU) for a CSR W of the pattern with values ``data``.
``spmm_t(pattern, data, grad, out)``
    out = W.T @ grad.
``sddmm(pattern, grad, x, out)``
    out[p] = grad[row_p] . x[col_p], the gradient at the stored entries only.
``adam_update(w, g, m, v, index, step)`` / ``sgd_update(w, g, velocity, index, step)``
    fused, optionally index-restricted optimizer steps; ``step`` is the rule's record of scalars.
``rule_update(rule, w, g, state, index, step)``
    the same for any rule of :mod:`.rules` (the experimental optimizers).

:mod:`.rules` holds the optimizers' element-wise rules, written once for every backend.

Activations are feature-major: arrays of shape (features, batch).
"""

from .pattern import SparsePattern

__all__ = ["SparsePattern"]
