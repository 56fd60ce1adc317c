"""The one atomic file writer: checkpoints, job results, plots and the data cache all go through it.

``atomic_write(path, write)`` calls ``write(handle)`` on a new temporary file in
``path``'s folder, flushes and fsyncs it, renames it onto ``path`` with
``os.replace`` and fsyncs the folder where the system allows it. Readers see
the old file or the complete new one, never a part. On any failure (an
exception, KeyboardInterrupt included) the temporary file is removed and
``path`` is left as it was.

The temporary file is created by ``open(..., 'xb')``, so it gets the mode of the
user's umask (0644 under the usual 022), like any other file the user writes,
and keeps it through the rename; ``tempfile.mkstemp`` would give 0600.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def atomic_write(path, write):
    """Write ``path`` atomically: ``write(handle)`` fills a binary file object; returns the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    handle = open(tmp, "xb")  # a fresh, unique name: a failure here leaves nothing to remove
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(path.parent)
    return path


def _fsync_folder(folder):
    """Make a rename in ``folder`` durable (not possible on every system: then skipped)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
