"""Fetching: real MNIST checksums, sources, checksum failures, the cache and its lock."""

import gzip
import hashlib
import http.server
import io
import socket
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sparana.data import (
    MNIST_SHA256,
    ChecksumError,
    FetchError,
    MirrorSource,
    cache_root,
    fetch_mnist,
    read_idx,
)
from sparana.data._fetch import fetch_files, read_tar_members, verify_sha256

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(scope="session")
def mnist_folder():
    """The real MNIST IDX files, fetched once per machine into the default cache."""
    return fetch_mnist()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeSource:
    """Serves fixed bytes (or raises) and counts its calls."""

    def __init__(self, files=None, error=None, name="fake", delay=0.0):
        self.files, self.error, self.name, self.delay = files or {}, error, name, delay
        self.calls = 0

    def __str__(self):
        return self.name

    def fetch(self, names):
        self.calls += 1
        time.sleep(self.delay)
        if self.error:
            raise self.error
        for n in names:
            if n in self.files:
                yield n, self.files[n]


FILES = {"a.bin": b"alpha", "b.bin": b"bravo"}
EXPECTED = {n: sha(d) for n, d in FILES.items()}


def leftovers(folder: Path):
    return sorted(p.name for p in folder.iterdir() if p.name != ".lock")


# --- real MNIST ---------------------------------------------------------------------------

def test_fetched_mnist_checksums(mnist_folder):
    for name, expected in MNIST_SHA256.items():
        assert sha((mnist_folder / name).read_bytes()) == expected


def test_training_class_counts(mnist_folder):
    labels = read_idx(mnist_folder / "train-labels-idx1-ubyte")
    assert np.bincount(labels).tolist() == TRAIN_COUNTS
    assert read_idx(mnist_folder / "t10k-images-idx3-ubyte").shape == (10000, 28, 28)


def test_fetch_mnist_from_fake_source_into_fresh_cache(tmp_path, mnist_folder):
    real = {n: (mnist_folder / n).read_bytes() for n in MNIST_SHA256}
    down = FakeSource(error=OSError("unreachable"), name="down mirror")
    good = FakeSource(real)
    folder = fetch_mnist(tmp_path, sources=[down, good])
    assert folder == tmp_path / "mnist"
    assert leftovers(folder) == sorted(MNIST_SHA256)
    never = FakeSource(error=AssertionError("must not be called"))
    assert fetch_mnist(tmp_path, sources=[never]) == folder and never.calls == 0


def test_cache_root_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARANA_DATA", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("SPARANA_DATA")
    assert cache_root() == Path.home() / ".cache" / "sparana"
    with pytest.raises(TypeError, match="cache_dir"):
        cache_root(3)


# --- sources and checksums ------------------------------------------------------------

def test_verify_sha256():
    verify_sha256("x", b"alpha", sha(b"alpha"))
    with pytest.raises(ChecksumError) as info:
        verify_sha256("x.bin", b"alpha", sha(b"beta"))
    assert isinstance(info.value, ValueError)
    assert "x.bin" in str(info.value) and sha(b"beta") in str(info.value)
    assert sha(b"alpha") in str(info.value)


def test_first_failing_source_then_good(tmp_path):
    down, good = FakeSource(error=OSError("no route"), name="down"), FakeSource(FILES)
    folder = fetch_files(tmp_path / "c", EXPECTED, [down, good])
    assert {n: (folder / n).read_bytes() for n in FILES} == FILES
    assert leftovers(folder) == sorted(FILES)
    assert down.calls == good.calls == 1


def test_present_files_not_fetched_again(tmp_path):
    fetch_files(tmp_path, EXPECTED, [FakeSource(FILES)])
    again = FakeSource(error=AssertionError("called"))
    fetch_files(tmp_path, EXPECTED, [again])
    assert again.calls == 0


def test_corrupted_cached_file_is_replaced(tmp_path):
    fetch_files(tmp_path, EXPECTED, [FakeSource(FILES)])
    (tmp_path / "a.bin").write_bytes(b"garbage")
    source = FakeSource(FILES)
    fetch_files(tmp_path, EXPECTED, [source])
    assert source.calls == 1 and (tmp_path / "a.bin").read_bytes() == b"alpha"


def test_checksum_mismatch_raises_and_leaves_no_file(tmp_path):
    bad = FakeSource({"a.bin": b"tampered", "b.bin": b"bravo"}, name="evil mirror")
    with pytest.raises(FetchError) as info:
        fetch_files(tmp_path, EXPECTED, [bad])
    message = str(info.value)
    assert "evil mirror" in message and "a.bin" in message
    assert EXPECTED["a.bin"] in message and sha(b"tampered") in message
    [(source, error)] = info.value.failures
    assert source == "evil mirror" and isinstance(error, ChecksumError)
    assert leftovers(tmp_path) == ["b.bin"]  # the good file is kept, the bad one never written


def test_bad_cached_file_and_bad_source_leave_no_bad_file(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"stale")
    (tmp_path / "b.bin").write_bytes(b"bravo")
    with pytest.raises(FetchError, match="ChecksumError"):
        fetch_files(tmp_path, EXPECTED, [FakeSource({"a.bin": b"tampered"})])
    assert (tmp_path / "a.bin").read_bytes() == b"stale"  # not overwritten by bad bytes
    assert leftovers(tmp_path) == ["a.bin", "b.bin"]


def test_bad_source_then_good_source(tmp_path):
    bad, good = FakeSource({"a.bin": b"x"}, name="bad"), FakeSource(FILES, name="good")
    fetch_files(tmp_path, EXPECTED, [bad, good])
    assert (tmp_path / "a.bin").read_bytes() == b"alpha"


def test_partial_sources_combine(tmp_path):
    first, second = FakeSource({"a.bin": b"alpha"}), FakeSource({"b.bin": b"bravo"})
    fetch_files(tmp_path, EXPECTED, [first, second])
    assert leftovers(tmp_path) == ["a.bin", "b.bin"]


def test_every_source_listed_when_all_fail(tmp_path):
    sources = [FakeSource(error=OSError("timed out"), name="mirror one"),
               FakeSource(error=FileNotFoundError("npm missing"), name="npm thing"),
               FakeSource({}, name="empty")]
    with pytest.raises(FetchError) as info:
        fetch_files(tmp_path, EXPECTED, sources)
    message = str(info.value)
    for text in ("mirror one", "timed out", "npm thing", "npm missing", "a.bin", "b.bin"):
        assert text in message
    assert len(info.value.failures) == 2  # "empty" gave nothing and raised nothing
    assert leftovers(tmp_path) == []


def test_concurrent_fetches_fetch_once(tmp_path):
    source = FakeSource(FILES, delay=0.2)
    errors = []

    def run():
        try:
            fetch_files(tmp_path, EXPECTED, [source])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and source.calls == 1
    assert {n: (tmp_path / n).read_bytes() for n in FILES} == FILES


# --- the real source classes against local stand-ins ----------------------------------------

@pytest.fixture
def http_folder(tmp_path):
    """A local HTTP server serving gzipped FILES (as a mirror does)."""
    root = tmp_path / "www"
    root.mkdir()
    for name, data in FILES.items():
        (root / f"{name}.gz").write_bytes(gzip.compress(data))

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mirror_source(tmp_path, http_folder):
    # A refused connection fails at once (no wall-clock bound here: on a busy machine any bound flakes).
    dead = MirrorSource(f"http://127.0.0.1:{closed_port()}", timeout=2)
    with pytest.raises(OSError):
        list(dead.fetch(["a.bin"]))
    fetch_files(tmp_path / "c", EXPECTED, [dead, MirrorSource(http_folder, timeout=2)])
    assert (tmp_path / "c" / "b.bin").read_bytes() == b"bravo"


def test_mirror_missing_file_reported(tmp_path, http_folder):
    expected = dict(EXPECTED, **{"c.bin": sha(b"charlie")})
    with pytest.raises(FetchError, match="404"):
        fetch_files(tmp_path / "c", expected, [MirrorSource(http_folder, timeout=2)])
    assert leftovers(tmp_path / "c") == ["a.bin", "b.bin"]


def make_tarball(path: Path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
    return path


def test_tar_members_read_safely(tmp_path):
    tgz = make_tarball(tmp_path / "p.tgz", [
        ("../../evil", b"x", "file"),
        ("package/data/a.bin", b"alpha", "file"),
        ("package/data/b.bin", b"", "link"),
    ])
    assert list(read_tar_members(tgz, ["package/data/a.bin"])) == [("a.bin", b"alpha")]
    with pytest.raises(ValueError, match="not a regular file"):
        list(read_tar_members(tgz, ["package/data/b.bin"]))
    with pytest.raises(FileNotFoundError, match="package/data/c.bin"):
        list(read_tar_members(tgz, ["package/data/c.bin"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.tgz"]  # nothing extracted
