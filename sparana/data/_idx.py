"""Reading and writing IDX files, the format MNIST is distributed in.

An IDX file is a 4-byte magic number -- two zero bytes, a type code, the number of
dimensions -- then one big-endian uint32 per dimension, then the data, big-endian,
in C order.  Files may be gzipped; gzip is detected by its magic bytes.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

__all__ = ["IdxFormatError", "read_idx", "write_idx"]

#: IDX type code -> dtype of the stored (big-endian) data.
IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


class IdxFormatError(ValueError):
    """An IDX file is malformed: wrong magic, unknown type, truncated or with trailing bytes."""


def _type_names() -> str:
    return ", ".join(f"0x{code:02X} ({dt.name})" for code, dt in IDX_TYPES.items())


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a plain or gzipped IDX file into a NumPy array.

    Returns a writeable array in native byte order whose shape is the file's dimensions.
    Raises :class:`IdxFormatError` (naming the file, what was expected and what was
    found) for a bad magic number, an unknown type code, a truncated header or body,
    trailing bytes, or a corrupt gzip stream; ``FileNotFoundError`` if there is no file.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise IdxFormatError(f"{path}: corrupt gzip stream ({exc})") from exc
    if len(raw) < 4:
        raise IdxFormatError(
            f"{path}: expected a 4-byte IDX magic number, found only {len(raw)} bytes"
        )
    if raw[0] != 0 or raw[1] != 0:
        raise IdxFormatError(
            f"{path}: expected an IDX magic number starting with two zero bytes, "
            f"found 0x{raw[:4].hex()}"
        )
    code, ndim = raw[2], raw[3]
    if code not in IDX_TYPES:
        raise IdxFormatError(
            f"{path}: unknown IDX type code 0x{code:02X}; expected one of {_type_names()}"
        )
    if ndim == 0:
        raise IdxFormatError(f"{path}: expected at least one dimension, the header says 0")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxFormatError(
            f"{path}: truncated header: {ndim} dimensions need {header} bytes, "
            f"file has {len(raw)}"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header
    if found != expected:
        problem = "truncated" if found < expected else "trailing bytes"
        raise IdxFormatError(
            f"{path}: {problem}: shape {shape} of {dtype.name} needs {expected} data bytes, "
            f"found {found}"
        )
    data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array, *, compress: bool = False) -> Path:
    """Write ``array`` as an IDX file (gzipped if ``compress``); returns the path.

    The dtype must be one of uint8, int8, int16, int32, float32, float64, and the
    array must have between 1 and 255 dimensions, each below 2**32.
    """
    path = Path(path)
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_TYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        names = ", ".join(dt.name for dt in codes)
        raise TypeError(f"write_idx({path}): expected dtype {names}; got {array.dtype}")
    if not 1 <= array.ndim <= 255 or any(d >= 2**32 for d in array.shape):
        raise ValueError(
            f"write_idx({path}): expected 1 to 255 dimensions each below 2**32, "
            f"got shape {array.shape}"
        )
    payload = (
        bytes([0, 0, code, array.ndim])
        + np.asarray(array.shape, ">u4").tobytes()
        + np.ascontiguousarray(array, IDX_TYPES[code]).tobytes()
    )
    path.write_bytes(gzip.compress(payload, mtime=0) if compress else payload)
    return path
