"""MNIST as a memory-mapped Arrow IPC file, with zero-copy NumPy views and shards.

The four IDX files are converted once into an uncompressed Arrow IPC *file* holding
one record batch per split (``train`` then ``test``) with the columns

    image: fixed_size_list<uint8>[rows * cols]   (not null)
    label: uint8                                 (not null)

and the schema metadata ``sparana.format`` (a format version), ``sparana.splits``
(JSON list of ``[name, rows]``), ``sparana.image_shape`` (JSON ``[rows, cols]``) and
``sparana.sources`` (JSON ``{file name: sha256}`` of the IDX files it was built from).
A cached file whose metadata does not match what is expected is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..io._atomic import atomic_write
from ._cache import cache_root, locked, sha256_file
from ._fetch import MNIST_SHA256, fetch_mnist
from ._idx import read_idx
from ._sampling import check_count, even_sizes

__all__ = ["ArrowFormatError", "ArrowSplit", "MnistData", "load_mnist", "to_float"]

FORMAT = "sparana-idx-arrow/1"
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
#: split -> (images file, labels file), canonical MNIST names.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_META_FORMAT = b"sparana.format"
_META_SPLITS = b"sparana.splits"
_META_SHAPE = b"sparana.image_shape"
_META_SOURCES = b"sparana.sources"


class ArrowFormatError(ValueError):
    """An Arrow file or table is not in the layout Sparana expects."""


def to_float(images) -> np.ndarray:
    """Convert uint8 pixels to a new float32 array in [0, 1] (``images / 255``)."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"to_float expects uint8 images, got dtype {images.dtype}")
    return np.divide(images, np.float32(255), dtype=np.float32)


def _single_chunk(column: pa.ChunkedArray) -> pa.Array:
    if column.num_chunks == 1:
        return column.chunk(0)
    return pa.concat_arrays(column.chunks) if column.num_chunks else pa.array([], column.type)


def _image_width(schema: pa.Schema) -> int:
    """Pixels per image, after checking the image and label columns' types."""
    types = {f.name: f.type for f in schema}
    image, label = types.get("image"), types.get("label")
    if (image is None or not pa.types.is_fixed_size_list(image)
            or image.value_type != pa.uint8() or label != pa.uint8()):
        found = ", ".join(f"{n}: {t}" for n, t in types.items())
        raise ArrowFormatError("expected columns image: fixed_size_list<uint8>[n] and "
                               f"label: uint8, got {found}")
    return image.list_size


class ArrowSplit:
    """One split (or a slice of one) of an image dataset held in Arrow memory.

    ``images`` is a read-only uint8 array of shape (N, rows*cols) and ``labels`` a
    read-only uint8 array of shape (N,); both are views of the Arrow buffers (of the
    memory map when loaded from disk), not copies.  Build one with :meth:`from_table`.
    """

    def __init__(self, table: pa.Table):
        if not isinstance(table, pa.Table):
            raise TypeError(f"ArrowSplit expects a pyarrow.Table, got {type(table).__name__}; "
                            "use ArrowSplit.from_table")
        width = _image_width(table.schema)
        image = _single_chunk(table.column("image"))
        label = _single_chunk(table.column("label"))
        if image.null_count or label.null_count or image.flatten().null_count:
            raise ArrowFormatError("expected no nulls in the image and label columns")
        if any(table.column(name).num_chunks != 1 for name in ("image", "label")):
            # Rebuild from the concatenated arrays so that slices stay views of them.
            table = pa.Table.from_arrays([image, label], names=["image", "label"],
                                         metadata=table.schema.metadata)
        self._table = table
        self.images = image.flatten().to_numpy(zero_copy_only=True).reshape(len(table), width)
        self.labels = label.to_numpy(zero_copy_only=True)
        shape = json.loads((table.schema.metadata or {}).get(_META_SHAPE, "null"))
        self.image_shape = tuple(shape) if shape and np.prod(shape) == width else (width,)

    @classmethod
    def from_table(cls, table: pa.Table | pa.RecordBatch) -> "ArrowSplit":
        """Wrap a Table or RecordBatch (for instance a shard from Ray's object store).

        A single-chunk table (and any RecordBatch) is used without copying; a table
        of several chunks is concatenated once (a copy).
        """
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        return cls(table)

    @property
    def table(self) -> pa.Table:
        """The underlying pyarrow Table (one chunk)."""
        return self._table

    def __len__(self) -> int:
        return self._table.num_rows

    def __repr__(self) -> str:
        return f"ArrowSplit({len(self)} images of {self.image_shape})"

    def slice(self, start: int | None = None, stop: int | None = None) -> "ArrowSplit":
        """Rows ``start:stop`` (Python slice rules), zero-copy."""
        start, stop, _ = slice(start, stop).indices(len(self))
        return ArrowSplit(self._table.slice(start, max(stop - start, 0)))

    def shard(self, n: int) -> list["ArrowSplit"]:
        """Split into ``n`` contiguous, disjoint, zero-copy slices covering all rows.

        Sizes differ by at most one (the first ``len % n`` shards have one more row).
        """
        n = check_count(n, "shard(n): n", 1, len(self), f"the split has {len(self)} rows")
        bounds = np.cumsum([0] + even_sizes(len(self), n))
        return [self.slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


class MnistData:
    """The ``train`` and ``test`` :class:`ArrowSplit` of an MNIST-shaped dataset.

    ``path`` is the Arrow file they are memory-mapped from and ``sources`` the
    ``{file name: sha256}`` of the IDX files it was built from.  Open an existing file
    with :meth:`open` (for instance in a Ray actor on the same node: cheap, zero-copy).
    """

    def __init__(self, train: ArrowSplit, test: ArrowSplit, path: Path | None = None,
                 sources: dict | None = None):
        self.train, self.test, self.path, self.sources = train, test, path, sources or {}

    def __repr__(self) -> str:
        return f"MnistData(train={len(self.train)}, test={len(self.test)}, path={self.path})"

    def as_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(train_images, train_labels, test_images, test_labels)``, zero-copy uint8 views."""
        return self.train.images, self.train.labels, self.test.images, self.test.labels

    @classmethod
    def open(cls, path: str | os.PathLike) -> "MnistData":
        """Memory-map a Sparana Arrow file; refuses (ArrowFormatError) any other file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no Arrow file at {path}")
        try:
            reader = pa.ipc.open_file(pa.memory_map(str(path), "r"))
        except pa.ArrowInvalid as exc:
            raise ArrowFormatError(f"{path}: not an Arrow IPC file ({exc})") from exc
        meta = reader.schema.metadata or {}
        found = meta.get(_META_FORMAT, b"(none)").decode(errors="replace")
        if found != FORMAT:
            raise ArrowFormatError(f"{path}: expected format {FORMAT!r}, found {found!r}")
        try:
            splits, sources = json.loads(meta[_META_SPLITS]), json.loads(meta[_META_SOURCES])
        except (KeyError, ValueError) as exc:
            raise ArrowFormatError(
                f"{path}: missing or malformed Sparana metadata ({exc!r})") from exc
        counts = [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]
        if [name for name, _ in splits] != list(IDX_FILES) or counts != [n for _, n in splits]:
            raise ArrowFormatError(
                f"{path}: expected record batches {splits} (split, rows), found row counts {counts}"
            )
        train, test = (ArrowSplit.from_table(reader.get_batch(i)) for i in range(2))
        return cls(train, test, path, sources)


def _check_split(images: np.ndarray, labels: np.ndarray, image_file: Path, label_file: Path):
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"{image_file}: expected uint8 images of shape (N, 28, 28), "
                         f"got {images.dtype} of shape {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"{label_file}: expected uint8 labels of shape (N,), "
                         f"got {labels.dtype} of shape {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{image_file.parent}: {image_file.name} holds {len(images)} images "
                         f"but {label_file.name} holds {len(labels)} labels")
    if labels.size and labels.max() >= NUM_CLASSES:
        raise ValueError(f"{label_file}: expected labels 0..{NUM_CLASSES - 1}, "
                         f"found {int(labels.max())}")


def _build(target: Path, files: dict[str, Path], sources: dict[str, str]) -> None:
    """Convert the IDX files to the Arrow file ``target`` (atomically)."""
    splits = {}
    for split, (image_name, label_name) in IDX_FILES.items():
        images, labels = read_idx(files[image_name]), read_idx(files[label_name])
        _check_split(images, labels, files[image_name], files[label_name])
        splits[split] = (images.reshape(len(images), -1), labels)
    write_image_file(target, splits, IMAGE_SHAPE, sources)


def write_image_file(target: Path, splits: dict, image_shape, sources: dict[str, str],
                     metadata: dict | None = None) -> None:
    """Write ``{"train": (images, labels), "test": ...}`` (uint8 arrays of shape (N, pixels) and (N,))
    as a Sparana Arrow file (see the module docstring), atomically; ``metadata`` adds schema entries."""
    width = int(np.prod(image_shape))
    schema = pa.schema(
        [pa.field("image", pa.list_(pa.uint8(), width), nullable=False),
         pa.field("label", pa.uint8(), nullable=False)],
        metadata={_META_FORMAT: FORMAT, _META_SPLITS: json.dumps([[n, len(splits[n][1])] for n in IDX_FILES]),
                  _META_SHAPE: json.dumps(list(image_shape)), _META_SOURCES: json.dumps(sources),
                  **(metadata or {})},
    )

    def write(handle) -> None:
        with pa.ipc.new_file(handle, schema) as writer:
            for split in IDX_FILES:
                images, labels = splits[split]
                image = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(images).reshape(-1)), width)
                writer.write_batch(pa.RecordBatch.from_arrays([image, pa.array(labels)], schema=schema))

    atomic_write(target, write)


def _open_current(target: Path, sources: dict[str, str]) -> MnistData | None:
    """The cached file if it exists and was built from ``sources`` by this version."""
    if not target.is_file():
        return None
    try:
        data = MnistData.open(target)
    except (ValueError, OSError):  # unreadable, foreign or of another version: rebuild
        return None
    return data if data.sources == sources else None


def _find_idx_files(folder: Path) -> dict[str, Path]:
    """The four canonical IDX files in ``folder``, each plain or gzipped (``.gz``)."""
    if not folder.exists():
        raise FileNotFoundError(f"no folder {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"expected a folder of IDX files, {folder} is not a folder")
    files, missing = {}, []
    for name in (n for pair in IDX_FILES.values() for n in pair):
        found = [p for p in (folder / name, folder / f"{name}.gz") if p.is_file()]
        if len(found) > 1:
            raise ValueError(f"{folder}: both {name} and {name}.gz exist; keep one")
        if found:
            files[name] = found[0]
        else:
            missing.append(name)
    if missing:
        present = sorted(p.name for p in folder.iterdir())[:20]
        raise FileNotFoundError(
            f"{folder}: expected IDX files {', '.join(missing)} (plain or .gz); "
            f"found {present or 'nothing'}"
        )
    return files


def load_mnist(path: str | os.PathLike | None = None,
               cache_dir: str | os.PathLike | None = None) -> MnistData:
    """Load MNIST (or a folder of MNIST-shaped IDX files) as memory-mapped Arrow data.

    With ``path=None`` the real MNIST is fetched and verified (:func:`fetch_mnist`) and
    converted once to ``<cache>/mnist/mnist.arrow``.  With ``path`` a folder holding the
    four canonical IDX files (plain or ``.gz``, e.g. Fashion-MNIST), those are read
    instead -- no checksum, but images must be N x 28 x 28 uint8 and labels N uint8 in
    0..9 -- and cached as ``<cache>/idx-arrow/<hash of the files>.arrow``.
    """
    root = cache_root(cache_dir)
    if path is None:
        folder = root / "mnist"
        target, sources = folder / "mnist.arrow", dict(MNIST_SHA256)
        files = {name: folder / name for name in sources}
    else:
        files = _find_idx_files(Path(path))
        sources = {p.name: sha256_file(p) for p in files.values()}
        key = hashlib.sha256(json.dumps(sources, sort_keys=True).encode()).hexdigest()[:32]
        target = root / "idx-arrow" / f"{key}.arrow"
    data = _open_current(target, sources)
    if data is not None:
        return data
    if path is None:
        fetch_mnist(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target.parent):
        data = _open_current(target, sources)  # another process may have built it meanwhile
        if data is None:
            _build(target, files, sources)
            data = MnistData.open(target)
    return data
