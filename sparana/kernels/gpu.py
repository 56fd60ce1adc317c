"""GPU kernels: the array-module code of :mod:`sparana.kernels.generic` run on CuPy.

cuSPARSE (through cupyx) does the sparse products; the element-wise updates
are CuPy expressions. Kept separate from ``generic`` so that a hand-written
CUDA kernel can replace any one of them without touching the rest.
"""

from .generic import (  # noqa: F401
    adam_update,
    bias_activation,
    relu_backward,
    sddmm,
    sgd_update,
    spmm,
    spmm_t,
)

__all__ = ["adam_update", "bias_activation", "relu_backward", "sddmm", "sgd_update", "spmm", "spmm_t"]
