"""Every file Sparana writes goes through one atomic writer: file modes follow the umask, and a
failed write leaves the old file intact and no temporary file behind."""

import builtins
import hashlib
import os
import stat

import pytest

import sparana as sa
from conftest import build_model
from sparana.data._fetch import fetch_files


class Source:
    """A data source holding one file."""

    def __init__(self, name, data):
        self.name, self.data = name, data

    def fetch(self, names):
        yield self.name, self.data


def cache_file(path, n):
    data = b"sparana" * (1000 + n)
    fetch_files(path.parent, {path.name: hashlib.sha256(data).hexdigest()}, [Source(path.name, data)])


WRITERS = {
    "checkpoint": lambda path, n: sa.save_checkpoint(path, build_model([5, 4, 3], ["relu", "linear"], seed=n)),
    "results json": lambda path, n: sa.Results(path.parent).save_json(path.name, {"round": n}),
    "results png": lambda path, n: sa.Results(path.parent).plot(path.name, {"p": ("x", "y", {"s": ([0, 1], [0, n])})}),
    "data cache": cache_file,
}
NAMES = {"checkpoint": "m.safetensors", "results json": "results.json", "results png": "plot.png",
         "data cache": "train-labels-idx1-ubyte"}


def files(folder):
    return sorted(p.name for p in folder.iterdir() if p.name != ".lock")  # the data cache's lock file


@pytest.fixture
def set_umask():
    """Set the process umask for one test and restore it afterwards."""
    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_get_the_mode_of_the_umask(writer, umask, set_umask, tmp_path):
    path = tmp_path / NAMES[writer]
    set_umask(umask)
    for n in (1, 2):  # a new file, then an overwrite
        WRITERS[writer](path, n)
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, f"{writer}, write {n}"
    assert files(tmp_path) == [path.name]


class Failing:
    """A file that writes half of what it is given, then raises ``error``."""

    def __init__(self, handle, error):
        self.handle, self.error = handle, error

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()

    def write(self, data):
        data = bytes(data)
        self.handle.write(data[:len(data) // 2])
        raise self.error

    def __getattr__(self, name):
        return getattr(self.handle, name)


def simulated_failure(*args, **kwargs):
    raise OSError("disk full (simulated)")


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize("failing", ["write", "interrupt", "fsync", "replace"])
def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(writer, failing, tmp_path, monkeypatch):
    from sparana.io import _atomic

    path = tmp_path / NAMES[writer]
    WRITERS[writer](path, 1)
    old = path.read_bytes()
    if failing in ("write", "interrupt"):  # fail midway: after half the first bytes were written
        error = KeyboardInterrupt() if failing == "interrupt" else OSError("disk full (simulated)")
        monkeypatch.setattr(_atomic, "open", lambda name, mode: Failing(builtins.open(name, mode), error),
                            raising=False)
    else:
        monkeypatch.setattr(os, failing, simulated_failure)
    with pytest.raises((OSError, KeyboardInterrupt)):
        WRITERS[writer](path, 2)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert files(tmp_path) == [path.name]
    WRITERS[writer](path, 3)  # and the next write works
    assert path.read_bytes() != old
