"""Keeping BLAS's threads and Numba's threads from fighting over the cores.

A model with sparse layers spends its time in Numba's parallel kernels; the
BLAS thread pool (OpenBLAS in NumPy and SciPy) would only add spinning threads
for its small dense layers (a classifier head) and slow those kernels down.
While such a model runs on the CPU, BLAS uses one thread.
"""

from __future__ import annotations

import contextlib
import functools


@functools.lru_cache(maxsize=None)
def _blas():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # then BLAS keeps its threads
        return None
    controller = ThreadpoolController().select(user_api="blas")
    return controller if controller.lib_controllers else None


def single_threaded_blas(active=True):
    """A context in which BLAS runs on one thread (a no-op when ``active`` is false)."""
    blas = _blas() if active else None
    return blas.limit(limits=1) if blas is not None else contextlib.nullcontext()
