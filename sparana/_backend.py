"""Array backends: NumPy/SciPy on the CPU, CuPy/cupyx on the GPU.

A model holds exactly one :class:`Backend`. Everything that differs between the
CPU and the GPU is either the array module (``xp``), the sparse module (``sp``)
or a kernel in :mod:`sparana.kernels`; nothing else branches on the device.
CuPy is optional: importing Sparana never needs it.
"""

from __future__ import annotations

import functools
import math
import operator

import numpy as np
import scipy.sparse

COMP_TYPES = ("CPU", "GPU")
DTYPES = {"float32": np.float32, "float64": np.float64}
# Bytes on which the CPU's work arrays start: a cache line, and one AVX-512 vector.
ALIGNMENT = 64


def aligned_empty(shape, dtype):
    """``np.empty(shape, dtype)`` whose data start on an :data:`ALIGNMENT` boundary.

    NumPy's large arrays start 16 bytes past a cache line, so each 512-byte row of a batch tile
    that a sparse kernel reads spans 9 cache lines instead of 8, and each vector load straddles
    two: the sparse products ran 15 to 30% slower on such arrays.
    """
    # (Plain Python: called for each layer's outputs in every evaluation, where NumPy's helpers
    # for the size and the address cost more than the allocation, the more so in two threads.)
    dtype = np.dtype(dtype)
    shape = tuple(map(operator.index, shape)) if np.iterable(shape) else (operator.index(shape),)
    if min(shape, default=0) < 0:
        raise ValueError(f"an array shape without negative dimensions expected, got {shape}")
    size = math.prod(shape) * dtype.itemsize
    raw = np.empty(size + ALIGNMENT, np.uint8)
    start = -raw.__array_interface__["data"][0] % ALIGNMENT
    return raw[start:start + size].view(dtype).reshape(shape)


class BackendError(RuntimeError):
    """The requested compute type cannot be used on this machine."""


@functools.lru_cache(maxsize=None)
def _cupy():
    """Return the cupy module, or None when CuPy is missing or sees no device."""
    try:
        import cupy
    except Exception:  # ImportError, or a broken CUDA install raising on import
        return None
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception:
        return None
    return cupy


def gpu_available() -> bool:
    """True when CuPy is installed and at least one CUDA device is visible."""
    return _cupy() is not None


def resolve_comp_type(comp_type) -> str:
    """Map ``None``/'CPU'/'GPU' (any case) to 'CPU' or 'GPU'.

    ``None`` picks the GPU when CuPy and a device are present, else the CPU.
    Asking for 'GPU' without them raises :class:`BackendError`.
    """
    if comp_type is None:
        return "GPU" if gpu_available() else "CPU"
    if not isinstance(comp_type, str) or comp_type.upper() not in COMP_TYPES:
        raise ValueError(f"comp_type must be one of {COMP_TYPES} or None, got {comp_type!r}")
    comp_type = comp_type.upper()
    if comp_type == "GPU" and not gpu_available():
        try:
            import cupy  # noqa: F401
        except Exception as exc:
            reason = f"CuPy cannot be imported ({exc.__class__.__name__}: {exc}); install the 'gpu' extra"
        else:
            reason = "CuPy is installed but sees no CUDA device"
        raise BackendError(f"comp_type='GPU' was requested but {reason}. Use comp_type='CPU' or None.")
    return comp_type


def resolve_dtype(dtype):
    """Map 'float32'/'float64' or the NumPy types to a NumPy dtype class."""
    if dtype in DTYPES:
        return DTYPES[dtype]
    if dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, np.dtype) and dtype.type in DTYPES.values():
        return dtype.type
    raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")


class Backend:
    """The array module, sparse module, kernels and float type of one model."""

    def __init__(self, comp_type=None, dtype="float32"):
        self.comp_type = resolve_comp_type(comp_type)
        self.dtype = resolve_dtype(dtype)
        if self.comp_type == "GPU":
            import cupyx.scipy.sparse

            from .kernels import gpu as kernels

            self.xp = _cupy()
            self.sp = cupyx.scipy.sparse
        else:
            from .kernels import cpu as kernels

            self.xp = np
            self.sp = scipy.sparse
        self.kernels = kernels

    def __repr__(self):
        return f"Backend(comp_type={self.comp_type!r}, dtype={np.dtype(self.dtype).name!r})"

    @property
    def is_gpu(self) -> bool:
        return self.comp_type == "GPU"

    def asarray(self, array, dtype=None, copy=False):
        """``array`` on this backend's device (a no-op when it already is there, of ``dtype``).

        With ``copy`` the result never shares memory with ``array``; the data are
        copied once at most (a move between devices or a change of dtype is that copy).
        """
        if self.is_gpu:
            result = self.xp.asarray(array, dtype=dtype)
        else:
            result = np.asarray(to_host(array), dtype=dtype)
        if copy and _may_share_memory(result, array):
            result = result.copy()
        return result

    def asfloat(self, array, copy=False):
        """``array`` on this device as a C-contiguous array of the model's float type (see ``asarray``)."""
        return self.xp.ascontiguousarray(self.asarray(array, dtype=self.dtype, copy=copy))

    def device_rng(self, rng):
        """A generator on the device, seeded once from the host generator ``rng`` (the model's stream).

        Made once per model and stream (CuPy's generators set up many states when created), so
        that dropout draws on the GPU without waiting for the host; a new stream (``reseed``) gets
        a new one. On the CPU, ``rng`` itself.
        """
        if not self.is_gpu:
            return rng
        cached = getattr(self, "_device_rng", None)
        if cached is None or cached[0] is not rng:
            cached = self._device_rng = (rng, self.xp.random.default_rng(int(rng.integers(2**63))))
        return cached[1]

    def zeros(self, shape, dtype=None):
        return self.xp.zeros(shape, dtype=dtype or self.dtype)

    def empty(self, shape, dtype=None):
        """A new uninitialised array; on the CPU aligned for the kernels (:func:`aligned_empty`)."""
        dtype = dtype or self.dtype
        return self.xp.empty(shape, dtype=dtype) if self.is_gpu else aligned_empty(shape, dtype)


def array_module(array):
    """numpy or cupy, whichever ``array`` belongs to."""
    if is_device_array(array):
        return _cupy()
    return np


def is_device_array(array) -> bool:
    """True for a CuPy array (without importing CuPy when it is not loaded)."""
    return type(array).__module__.split(".")[0] == "cupy"


def to_host(array, copy=False):
    """A NumPy array (or SciPy sparse matrix) holding ``array``.

    Host arrays pass through, or are copied with ``copy`` (device arrays are always copied).
    """
    if array is None:
        return None
    if is_device_array(array) or type(array).__module__.startswith("cupyx"):
        return array.get()
    return array.copy() if copy else array


def _may_share_memory(result, array):
    """Whether ``result`` (made from ``array`` by ``Backend.asarray``) may be a view of it."""
    if is_device_array(result) != is_device_array(array):
        return False  # moved between the host and the device: a new array
    return bool(array_module(result).may_share_memory(result, array))
