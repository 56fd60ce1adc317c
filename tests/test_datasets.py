"""Image data sets other than MNIST: Parquet and Arrow files, IDX folders, Fashion-MNIST; and bad files."""

import contextlib
import functools
import hashlib
import http.server
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sparana.data import DatasetError, FetchError, dataset_shape, load_dataset, write_idx
from sparana.data import _datasets

RNG = np.random.default_rng(7)
IMAGES = RNG.integers(0, 256, (50, 16), dtype=np.uint8)
LABELS = RNG.integers(0, 3, 50)
SPLIT = ["train"] * 40 + ["test"] * 10


def fixed(images, kind=pa.uint8()):
    return pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(images).reshape(-1), kind), np.shape(images)[1])


def parquet(tmp_path, name="set.parquet", **columns):
    columns = {"image": fixed(IMAGES), "label": LABELS, "split": SPLIT, **columns}
    pq.write_table(pa.table({k: v for k, v in columns.items() if v is not None}), tmp_path / name)
    return str(tmp_path / name)


def load(spec, tmp_path):
    return load_dataset(spec, cache_dir=tmp_path / "cache")


def test_a_parquet_file_becomes_memory_mapped_zero_copy_splits(tmp_path):
    data = load(parquet(tmp_path), tmp_path)
    assert dataset_shape(data) == (16, 3) and (len(data.train), len(data.test)) == (40, 10)
    assert np.array_equal(data.train.images, IMAGES[:40]) and np.array_equal(data.test.labels, LABELS[40:])
    assert data.path.parent == tmp_path / "cache" / "datasets" and not data.train.images.flags.writeable
    built = data.path.stat().st_mtime_ns
    again = load(parquet(tmp_path), tmp_path)
    assert again.path == data.path and again.path.stat().st_mtime_ns == built  # converted once
    shards = data.train.shard(2)  # zero-copy slices of the memory map, as MNIST's
    assert shards[1].images.__array_interface__["data"][0] == data.train.images[20:].__array_interface__["data"][0]
    first = load({"path": parquet(tmp_path), "train_rows": 8, "test_rows": 4}, tmp_path)
    assert (len(first.train), len(first.test)) == (8, 4) and np.array_equal(first.train.images, IMAGES[:8])


def test_arrow_ipc_files_binary_images_separate_splits_and_declared_classes(tmp_path):
    table = pa.table({"pixels": pa.array([bytes(row) for row in IMAGES]), "y": pa.array(LABELS, pa.int8())})
    with pa.ipc.new_stream(tmp_path / "train.arrows", table.schema) as writer:  # a stream...
        writer.write_table(table)
    with pa.ipc.new_file(tmp_path / "test.arrow", table.schema) as writer:  # ... and a file
        writer.write_table(table.slice(0, 10))
    data = load({"train": str(tmp_path / "train.arrows"), "test": str(tmp_path / "test.arrow"), "image": "pixels",
                 "label": "y", "classes": 5}, tmp_path)
    assert dataset_shape(data) == (16, 5) and np.array_equal(data.train.images, IMAGES)
    lists = pa.table({"image": pa.array(IMAGES.astype(np.int64).tolist()), "label": LABELS, "split": SPLIT})
    pq.write_table(lists, tmp_path / "lists.parquet")  # variable-size lists of int64, all of one length
    assert np.array_equal(load(str(tmp_path / "lists.parquet"), tmp_path).test.images, IMAGES[40:])


def test_a_folder_of_gzipped_idx_files_of_any_image_shape(tmp_path):
    images = RNG.integers(0, 256, (30, 6, 5), dtype=np.uint8)
    labels = RNG.integers(0, 4, 30).astype(np.uint8)
    for prefix, rows in (("train", slice(0, 24)), ("t10k", slice(24, 30))):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images[rows], compress=True)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels[rows], compress=True)
    data = load(str(tmp_path), tmp_path)
    assert dataset_shape(data) == (30, 4) and data.train.image_shape == (6, 5)
    assert np.array_equal(data.test.images, images[24:].reshape(6, 30))


def table_error(tmp_path, spec=None, **columns):
    with pytest.raises(DatasetError) as caught:
        load(dict({"path": parquet(tmp_path, **columns)}, **(spec or {})), tmp_path)
    return str(caught.value)


WHERE = "set.parquet (train split)"


def test_wrong_column_types_are_refused_with_what_was_expected(tmp_path):
    assert f"{WHERE}: image column 'image' must hold fixed-size lists of integers 0..255, lists of equal length, " \
           "or binary values of equal length; found string" in table_error(tmp_path, image=["x"] * 50)
    assert f"{WHERE}: image column 'image' must hold fixed-size lists of integers 0..255, lists of equal length, " \
           "or binary values of equal length: its values are float; store pixels as integers 0..255 (uint8)" \
           in table_error(tmp_path, image=fixed(IMAGES / 255, pa.float32()))
    assert f"{WHERE}: image column 'image': pixel values must be 0..255, found 0..300" in table_error(
        tmp_path, image=fixed(np.where(IMAGES == IMAGES.max(), 300, IMAGES.astype(np.int16)), pa.int16()))
    assert f"{WHERE}: label column 'label' must hold integer class ids, found double" in table_error(
        tmp_path, label=LABELS.astype(float))
    assert f"{WHERE}: column 'label' holds 1 nulls" in table_error(tmp_path, label=[None] + list(LABELS[1:]))
    assert f"{WHERE}: no image column 'image' (columns: label, split, pixels); name it with data: {{image: COLUMN}}" \
        in table_error(tmp_path, image=None, pixels=fixed(IMAGES))


def test_ragged_images_are_refused_naming_the_first_ragged_row(tmp_path):
    ragged = [list(row) for row in IMAGES]
    ragged[2] = ragged[2][:15]
    assert f"{WHERE}: ragged images in column 'image': row 0 has 16 values, row 2 has 15; every image needs the " \
           "same number of pixels" in table_error(tmp_path, image=pa.array(ragged, pa.list_(pa.uint8())))
    binary = [bytes(row) for row in IMAGES]
    binary[3] = binary[3] + b"\x00"
    assert f"{WHERE}: ragged images in column 'image': row 0 has 16 values, row 3 has 17" in table_error(
        tmp_path, image=binary)


def test_labels_out_of_range_are_refused(tmp_path):
    negative = LABELS.copy()
    negative[1] = -1
    assert f"{WHERE}, column 'label': labels out of range: expected class ids 0..255, found -1 (row 1; the labels " \
           "span -1..2)" in table_error(tmp_path, label=negative)
    assert f"{WHERE}, column 'label': labels out of range: expected class ids 0..1, found 2" in table_error(
        tmp_path, {"classes": 2})
    assert "labels out of range: expected class ids 0..255, found 256" in table_error(
        tmp_path, label=np.where(LABELS == 2, 256, LABELS.astype(np.int64)))


def test_bad_splits_and_files_that_are_no_data_sets(tmp_path):
    assert "set.parquet: no split column 'split' (columns: image, label); add one with values 'train' and 'test', " \
           "or give data: {train: PATH, test: PATH}" in table_error(tmp_path, split=None)
    assert "set.parquet: split column 'split' must hold exactly 'train' and 'test', found ['test', 'train', " \
           "'valid']" in table_error(tmp_path, split=SPLIT[:-1] + ["valid"])
    (tmp_path / "notes.parquet").write_text("not a table")
    with pytest.raises(DatasetError, match="notes.parquet: not a readable Parquet or Arrow IPC file"):
        load(str(tmp_path / "notes.parquet"), tmp_path)
    with pytest.raises(DatasetError, match="missing.parquet: no such file"):
        load(str(tmp_path / "missing.parquet"), tmp_path)
    with pytest.raises(DatasetError, match="train_rows: 99 asked, the train split has 40 rows"):
        load({"path": parquet(tmp_path), "train_rows": 99}, tmp_path)
    folder = tmp_path / "idx"
    folder.mkdir()
    for prefix in ("train", "t10k"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", np.zeros((4, 3, 3), np.float32))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte: expected uint8 images \(IDX type 0x08\) of "
                                           r"shape \(N, H, W...\), found float32 of shape \(4, 3, 3\)"):
        load(str(folder), tmp_path)


@contextlib.contextmanager
def serving(folder):
    """An HTTP server on 127.0.0.1 serving ``folder``; yields its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_fashion_mnist_is_fetched_from_its_mirrors_and_accepted_only_with_the_right_sha256(tmp_path, monkeypatch):
    served = tmp_path / "www"
    served.mkdir()
    images = RNG.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    labels = (np.arange(20) % 10).astype(np.uint8)
    checksums = {}
    for prefix, rows in (("train", slice(0, 15)), ("t10k", slice(15, 20))):
        for kind, array in (("images-idx3", images[rows]), ("labels-idx1", labels[rows])):
            name = f"{prefix}-{kind}-ubyte.gz"
            write_idx(served / name, array, compress=True)
            checksums[name] = hashlib.sha256((served / name).read_bytes()).hexdigest()
    with serving(served) as url:
        monkeypatch.setattr(_datasets, "FASHION_MNIST_MIRRORS", (url + "nowhere/", url))  # the first mirror: 404
        monkeypatch.setattr(_datasets, "FASHION_MNIST_SHA256", checksums)
        data = load("fashion-mnist", tmp_path)
        assert dataset_shape(data) == (784, 10) and np.array_equal(data.test.images, images[15:].reshape(5, 784))
        assert sorted(p.name for p in (tmp_path / "cache" / "fashion-mnist").glob("*.gz")) == sorted(checksums)
        wrong = dict(checksums, **{"t10k-labels-idx1-ubyte.gz": "0" * 64})
        monkeypatch.setattr(_datasets, "FASHION_MNIST_SHA256", wrong)
        with pytest.raises(FetchError) as caught:
            load_dataset("fashion-mnist", cache_dir=tmp_path / "other")
    message = str(caught.value)
    assert "could not fetch t10k-labels-idx1-ubyte.gz" in message and "HTTP 404" in message
    assert f"ChecksumError: t10k-labels-idx1-ubyte.gz: expected SHA-256 {'0' * 64}, got " \
           f"{checksums['t10k-labels-idx1-ubyte.gz']}" in message
    assert not (tmp_path / "other" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").exists()  # never written


def test_the_published_fashion_mnist_checksums_are_those_of_its_four_gzipped_files():
    assert sorted(_datasets.FASHION_MNIST_SHA256) == sorted(f"{name}.gz" for name in (
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
    assert all(len(sha) == 64 and int(sha, 16) >= 0 for sha in _datasets.FASHION_MNIST_SHA256.values())
