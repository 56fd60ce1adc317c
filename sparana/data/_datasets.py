"""Image data sets for experiments: MNIST, Fashion-MNIST, a folder of IDX files, an Arrow IPC or Parquet file.

Whatever its source, a data set becomes what MNIST is: an uncompressed Arrow IPC file in the cache
(``<cache>/datasets/<key>.arrow``, the layout of :mod:`._arrow`: a ``train`` and a ``test`` record
batch of ``image: fixed_size_list<uint8>[pixels]`` and ``label: uint8``), memory-mapped, whose
splits are :class:`ArrowSplit` views that shard zero-copy. The file is built once per input: its
key is the SHA-256 of the input files and of the options that shape the conversion.

``spec`` (what a config's ``data:`` holds):

* ``"mnist"`` or ``"fashion-mnist"``: fetched from public mirrors, accepted only with the right SHA-256;
* a folder of the four canonical IDX files (``train-images-idx3-ubyte``..., plain or ``.gz``),
  images of any shape (N x H x W, or N x H x W x C) in uint8, integer labels;
* an Arrow IPC (file or stream) or Parquet file with an image column (fixed-size or equal-length
  lists of integers 0..255, or binary values of equal length) and an integer label column, its
  rows split by a ``split`` column ("train" / "test");
* a mapping: ``{path: ...}`` or ``{train: PATH, test: PATH}``, with optional ``image``, ``label``
  and ``split`` (column names), ``classes`` (labels must be below it) and ``train_rows`` /
  ``test_rows`` (use only the first rows of a split: quick trials).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from ._arrow import IDX_FILES, MnistData, _find_idx_files, load_mnist, write_image_file
from ._cache import cache_root, locked, sha256_file
from ._fetch import MirrorSource, fetch_files
from ._idx import read_idx

__all__ = ["DatasetError", "FASHION_MNIST_SHA256", "dataset_shape", "fetch_fashion_mnist", "load_dataset"]

#: SHA-256 of the four gzipped Fashion-MNIST files as the mirrors serve them (not verified here:
#: from public code, e.g. Britefury/batchup batchup/datasets/fashion_mnist.py).
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}
FASHION_MNIST_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
NAMED = ("mnist", "fashion-mnist")
SPEC_KEYS = ("path", "train", "test", "image", "label", "split", "classes", "train_rows", "test_rows")
CONVERTER = "sparana-dataset/1"  # part of the cache key: a new converter builds new files
_META_CLASSES = b"sparana.classes"
_PARQUET_MAGIC, _ARROW_MAGIC = b"PAR1", b"ARROW1"


class DatasetError(ValueError):
    """A data set that cannot be used: says which file, what was expected and what was found."""


def fetch_fashion_mnist(cache_dir: str | os.PathLike | None = None, *, sources=None, timeout: float = 5.0) -> Path:
    """Fetch the four gzipped Fashion-MNIST IDX files (once) into ``<cache>/fashion-mnist/``; return the folder.

    Each file is accepted only with its SHA-256 (:data:`FASHION_MNIST_SHA256`); ``sources`` defaults
    to the public mirrors (``timeout`` seconds each). Raises :class:`FetchError` naming every source
    tried and why it failed.
    """
    if sources is None:
        sources = [MirrorSource(url, timeout, decompress=False) for url in FASHION_MNIST_MIRRORS]
    return fetch_files(cache_root(cache_dir) / "fashion-mnist", FASHION_MNIST_SHA256, sources)


def load_dataset(spec="mnist", cache_dir: str | os.PathLike | None = None) -> MnistData:
    """The train and test splits of the data set ``spec`` (see the module docstring), memory-mapped."""
    spec = _spec(spec)
    path = spec.get("path")
    if path == "mnist":
        data = load_mnist(cache_dir=cache_dir)
    elif path == "fashion-mnist":
        data = _from_idx_folder(fetch_fashion_mnist(cache_dir), spec, cache_dir, known=FASHION_MNIST_SHA256)
    elif path is not None and Path(path).is_dir():
        data = _from_idx_folder(Path(path), spec, cache_dir)
    else:
        data = _from_tables(spec, cache_dir)
    return _first_rows(data, spec)


def dataset_shape(data: MnistData) -> tuple[int, int]:
    """(input size, number of classes) of a data set: pixels per image, and its declared classes or
    the largest label + 1."""
    declared = (data.train.table.schema.metadata or {}).get(_META_CLASSES)
    if declared is not None:
        return data.train.images.shape[1], int(declared)
    largest = max(int(split.labels.max()) for split in (data.train, data.test) if len(split))
    return data.train.images.shape[1], largest + 1


# ------------------------------------------------------------------ the specification
def _spec(spec) -> dict:
    if isinstance(spec, (str, os.PathLike)):
        spec = {"path": os.fspath(spec)}
    if not isinstance(spec, dict):
        raise DatasetError(f"a data set is a name ({', '.join(NAMED)}), a path or a mapping; got {spec!r}")
    spec = {key: value for key, value in spec.items() if value is not None}  # None: the default
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise DatasetError(f"unknown data set keys {unknown}; valid keys: {', '.join(SPEC_KEYS)}")
    if ("path" in spec) == ("train" in spec or "test" in spec) or ("train" in spec) != ("test" in spec):
        raise DatasetError(f"a data set needs either path, or both train and test files; got {spec}")
    return dict(spec)


def _first_rows(data: MnistData, spec: dict) -> MnistData:
    """Only the first ``train_rows`` / ``test_rows`` rows (zero-copy slices), when asked."""
    splits = {}
    for split in IDX_FILES:
        rows, part = spec.get(f"{split}_rows"), getattr(data, split)
        if rows is not None and rows > len(part):
            raise DatasetError(f"{split}_rows: {rows} asked, the {split} split has {len(part)} rows")
        splits[split] = part if rows is None else part.slice(0, rows)
    return MnistData(splits["train"], splits["test"], data.path, data.sources)


def _cached(kind: str, sources: dict, spec: dict, cache_dir, build) -> MnistData:
    """The converted file for these inputs and options, built (atomically, once) by ``build(target)``."""
    options = {key: spec.get(key) for key in ("image", "label", "split", "classes")}
    key = hashlib.sha256(json.dumps([CONVERTER, kind, sources, options], sort_keys=True).encode()).hexdigest()
    target = cache_root(cache_dir) / "datasets" / f"{key[:32]}.arrow"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with locked(target.parent):
            if not target.is_file():  # another process may have built it meanwhile
                build(target)
    return MnistData.open(target)


def _write(target: Path, splits: dict, image_shape, sources: dict, classes) -> None:
    """Check labels against ``classes`` (or 0..255) and the images' widths, then write the file."""
    widths = {split: images.shape[1] for split, (images, _) in splits.items()}
    if len(set(widths.values())) > 1:
        raise DatasetError(f"the splits' images differ in size: {widths} pixels")
    largest = max(int(labels.max()) for _, labels in splits.values() if labels.size)
    classes = classes if classes is not None else largest + 1
    write_image_file(target, splits, image_shape, sources, {_META_CLASSES: str(classes)})


def _check_labels(labels: np.ndarray, classes, where: str) -> np.ndarray:
    """Integer labels in 0..classes-1 (0..255 when not declared), returned as uint8."""
    if labels.size == 0:
        raise DatasetError(f"{where}: no rows")
    high = (classes if classes is not None else 256) - 1
    low_found, high_found = int(labels.min()), int(labels.max())
    if low_found < 0 or high_found > high:
        row = int(np.argmax((labels < 0) | (labels > high)))
        raise DatasetError(f"{where}: labels out of range: expected class ids 0..{high}, found {labels[row]} "
                           f"(row {row}; the labels span {low_found}..{high_found})")
    return labels.astype(np.uint8)


# ------------------------------------------------------------------------ IDX folders
def _from_idx_folder(folder: Path, spec: dict, cache_dir, known=None) -> MnistData:
    """``known``: {file name: SHA-256} of files already checked (fetched ones), not hashed again."""
    files = _find_idx_files(folder)
    known = known or {}
    sources = {p.name: known.get(p.name) or sha256_file(p) for p in files.values()}

    def build(target):
        splits, shapes = {}, {}
        for split, (image_name, label_name) in IDX_FILES.items():
            images, labels = read_idx(files[image_name]), read_idx(files[label_name])
            where = files[image_name]
            if images.dtype != np.uint8 or images.ndim < 2:
                raise DatasetError(f"{where}: expected uint8 images (IDX type 0x08) of shape (N, H, W...), "
                                   f"found {images.dtype} of shape {images.shape}")
            if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
                raise DatasetError(f"{files[label_name]}: expected integer labels of shape (N,), "
                                   f"found {labels.dtype} of shape {labels.shape}")
            if len(images) != len(labels):
                raise DatasetError(f"{folder}: {where.name} holds {len(images)} images but "
                                   f"{files[label_name].name} holds {len(labels)} labels")
            labels = _check_labels(labels.astype(np.int64), spec.get("classes"), str(files[label_name]))
            splits[split], shapes[split] = (images.reshape(len(images), -1), labels), images.shape[1:]
        if shapes["train"] != shapes["test"]:
            raise DatasetError(f"{folder}: training images are {shapes['train']}, test images {shapes['test']}")
        _write(target, splits, shapes["train"], sources, spec.get("classes"))

    return _cached("idx", sources, spec, cache_dir, build)


# -------------------------------------------------------------- Arrow and Parquet files
def _from_tables(spec: dict, cache_dir) -> MnistData:
    paths = {"data": spec["path"]} if "path" in spec else {"train": spec["train"], "test": spec["test"]}
    for path in paths.values():
        if not Path(path).is_file():
            raise DatasetError(f"{path}: no such file (a data set is {', '.join(NAMED)}, a folder of IDX files, "
                               f"or an Arrow IPC or Parquet file)")
    sources = {os.fspath(p): sha256_file(Path(p)) for p in paths.values()}

    def build(target):
        if "path" in spec:
            tables = _split_by_column(_read_table(spec["path"]), spec)
        else:
            tables = {split: (_read_table(spec[split]), spec[split]) for split in IDX_FILES}
        splits = {split: _arrays(table, spec, f"{where} ({split} split)") for split, (table, where) in tables.items()}
        _write(target, splits, (splits["train"][0].shape[1],), sources, spec.get("classes"))

    return _cached("table", sources, spec, cache_dir, build)


def _read_table(path) -> pa.Table:
    """A Parquet file, or an Arrow IPC file or stream, as a table (told apart by their first bytes)."""
    with open(path, "rb") as handle:
        magic = handle.read(6)
    try:
        if magic[:4] == _PARQUET_MAGIC:
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if magic == _ARROW_MAGIC:
            return pa.ipc.open_file(path).read_all()
        return pa.ipc.open_stream(path).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise DatasetError(f"{path}: not a readable Parquet or Arrow IPC file ({exc})") from exc


def _split_by_column(table: pa.Table, spec: dict) -> dict:
    """{"train": (rows whose split column is "train", where), "test": ...} of one table."""
    path, column = spec["path"], spec.get("split", "split")
    if column not in table.column_names:
        raise DatasetError(f"{path}: no split column {column!r} (columns: {', '.join(table.column_names)}); "
                           f"add one with values 'train' and 'test', or give data: {{train: PATH, test: PATH}}")
    import pyarrow.compute as pc  # here, not at import: it costs `import sparana` 30 ms

    values = pc.cast(table.column(column), pa.string()) if not pa.types.is_string(table.column(column).type) \
        else table.column(column)
    found = sorted(str(v) for v in pc.unique(values).to_pylist())
    if set(found) != set(IDX_FILES):
        raise DatasetError(f"{path}: split column {column!r} must hold exactly 'train' and 'test', found {found}")
    return {split: (table.filter(pc.equal(values, split)), path) for split in IDX_FILES}


def _arrays(table: pa.Table, spec: dict, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images of shape (N, pixels), uint8 labels) of a table's image and label columns."""
    columns = {}
    for role in ("image", "label"):
        name = spec.get(role, role)
        if name not in table.column_names:
            raise DatasetError(f"{where}: no {role} column {name!r} (columns: {', '.join(table.column_names)}); "
                               f"name it with data: {{{role}: COLUMN}}")
        column = table.column(name)
        columns[role] = (column.combine_chunks() if column.num_chunks else pa.array([], column.type), name)
        if columns[role][0].null_count:
            raise DatasetError(f"{where}: column {name!r} holds {columns[role][0].null_count} nulls")
    images = _images(*columns["image"], where)
    labels, name = columns["label"]
    if not pa.types.is_integer(labels.type):
        raise DatasetError(f"{where}: label column {name!r} must hold integer class ids, found {labels.type}")
    return images, _check_labels(labels.to_numpy(zero_copy_only=False).astype(np.int64), spec.get("classes"),
                                 f"{where}, column {name!r}")


def _images(column: pa.Array, name: str, where: str) -> np.ndarray:
    import pyarrow.compute as pc  # (see _split_by_column)

    kind = column.type
    expected = "fixed-size lists of integers 0..255, lists of equal length, or binary values of equal length"
    if pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind):
        if pa.types.is_fixed_size_list(kind):
            width = kind.list_size
        else:
            width = _equal_lengths(pc.list_value_length(column).to_numpy(zero_copy_only=False), name, where)
        values = column.flatten()
        if not pa.types.is_integer(values.type):
            raise DatasetError(f"{where}: image column {name!r} must hold {expected}: its values are "
                               f"{values.type}; store pixels as integers 0..255 (uint8)")
        if len(values) and (pc.min(values).as_py() < 0 or pc.max(values).as_py() > 255):
            raise DatasetError(f"{where}: image column {name!r}: pixel values must be 0..255, found "
                               f"{pc.min(values).as_py()}..{pc.max(values).as_py()}")
        pixels = values.to_numpy(zero_copy_only=False).astype(np.uint8, copy=False)
    elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        if pa.types.is_fixed_size_binary(kind):
            width = kind.byte_width
        else:
            width = _equal_lengths(pc.binary_length(column).to_numpy(zero_copy_only=False), name, where)
            column = column.cast(pa.binary(width))
        start = column.offset * width
        pixels = np.frombuffer(column.buffers()[1], np.uint8)[start:start + len(column) * width]
    else:
        raise DatasetError(f"{where}: image column {name!r} must hold {expected}; found {kind}")
    if width < 1:
        raise DatasetError(f"{where}: image column {name!r} holds empty images")
    return pixels.reshape(len(column), width)


def _equal_lengths(lengths: np.ndarray, name: str, where: str) -> int:
    """The one length of every image, or DatasetError naming the first ragged row."""
    if len(lengths) and (lengths != lengths[0]).any():
        row = int(np.argmax(lengths != lengths[0]))
        raise DatasetError(f"{where}: ragged images in column {name!r}: row 0 has {lengths[0]} values, "
                           f"row {row} has {lengths[row]}; every image needs the same number of pixels")
    return int(lengths[0]) if len(lengths) else 0
