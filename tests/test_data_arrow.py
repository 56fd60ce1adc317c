"""The Arrow dataset: real MNIST, zero-copy views, shards, user folders, stale caches."""

import pickle
import shutil

import numpy as np
import pyarrow as pa
import pytest

from sparana.data import (
    MNIST_SHA256,
    ArrowFormatError,
    ArrowSplit,
    MnistData,
    fetch_mnist,
    load_mnist,
    to_float,
    write_idx,
)

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@pytest.fixture(scope="session")
def mnist():
    """Real MNIST, fetched once per machine into the default cache."""
    return load_mnist()


def address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def synthetic(rng, n_train=50, n_test=20, shape=(28, 28)):
    return {
        "train_images": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_folder(folder, arrays, gz=("train_images", "test_labels")):
    folder.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        name = NAMES[key] + (".gz" if key in gz else "")
        write_idx(folder / name, array, compress=key in gz)
    return folder


# --- real MNIST ---------------------------------------------------------------------------

def test_mnist_arrays(mnist):
    train_images, train_labels, test_images, test_labels = mnist.as_arrays()
    assert train_images.shape == (60000, 784) and train_images.dtype == np.uint8
    assert test_images.shape == (10000, 784) and test_labels.shape == (10000,)
    assert np.bincount(train_labels).tolist() == TRAIN_COUNTS
    assert mnist.train.image_shape == (28, 28) and len(mnist.train) == 60000
    assert mnist.sources == MNIST_SHA256
    assert mnist.path.name == "mnist.arrow" and mnist.path.parent == fetch_mnist()
    for array in mnist.as_arrays():
        assert not array.flags.writeable and not array.flags.owndata
    schema = mnist.train.table.schema
    assert schema.field("image").type == pa.list_(pa.uint8(), 784)
    assert schema.field("label").type == pa.uint8()


def test_open_is_zero_copy(mnist):
    before = pa.total_allocated_bytes()
    data = MnistData.open(mnist.path)
    assert pa.total_allocated_bytes() - before < 1 << 16  # nothing copied into Arrow memory
    np.testing.assert_array_equal(data.test.images[:5], mnist.test.images[:5])


def test_shards_zero_copy_disjoint_covering(mnist):
    split = mnist.train
    shards = split.shard(7)
    sizes = [len(s) for s in shards]
    assert sum(sizes) == 60000 and max(sizes) - min(sizes) <= 1
    offset = 0
    for shard in shards:
        assert np.shares_memory(shard.images, split.images)
        assert np.shares_memory(shard.labels, split.labels)
        assert address(shard.images) == address(split.images) + offset * 784
        assert address(shard.labels) == address(split.labels) + offset
        assert not shard.images.flags.writeable
        offset += len(shard)
    np.testing.assert_array_equal(np.concatenate([s.labels for s in shards]), split.labels)
    for a, b in zip(shards, shards[1:]):
        assert not np.shares_memory(a.images, b.images)


def test_slice(mnist):
    split = mnist.test
    part = split.slice(100, 250)
    assert len(part) == 150 and address(part.images) == address(split.images) + 100 * 784
    np.testing.assert_array_equal(part.labels, split.labels[100:250])
    np.testing.assert_array_equal(split.slice(-10).labels, split.labels[-10:])
    assert len(split.slice(9990, 20000)) == 10 and len(split.slice(5, 2)) == 0
    with pytest.raises(ValueError, match="10000 rows"):
        split.shard(10001)
    with pytest.raises(TypeError, match="int"):
        split.shard(2.0)


def test_from_table_after_object_store_round_trip(mnist):
    shard = mnist.train.shard(3)[1]
    shipped = pickle.loads(pickle.dumps(shard.table))  # what Ray's object store does
    back = ArrowSplit.from_table(shipped)
    np.testing.assert_array_equal(back.images, shard.images)
    np.testing.assert_array_equal(back.labels, shard.labels)
    assert back.image_shape == (28, 28)
    batch = shard.table.to_batches()[0]
    assert np.shares_memory(ArrowSplit.from_table(batch).images, shard.images)
    assert np.shares_memory(ArrowSplit.from_table(shard.table).images, shard.images)


def test_from_table_several_chunks_and_bad_schema(mnist):
    t = mnist.test.table
    chunked = pa.concat_tables([t.slice(0, 3), t.slice(3, 4)])
    split = ArrowSplit.from_table(chunked)
    np.testing.assert_array_equal(split.labels, mnist.test.labels[:7])
    assert np.shares_memory(split.slice(2, 5).images, split.images)
    bad = pa.table({"image": pa.array([[1, 2]], pa.list_(pa.int32(), 2)), "label": [1]})
    with pytest.raises(ArrowFormatError, match="fixed_size_list<uint8>"):
        ArrowSplit.from_table(bad)
    with pytest.raises(TypeError, match="dict"):
        ArrowSplit({})


def test_to_float():
    images = np.array([[0, 51, 255]], np.uint8)
    out = to_float(images)
    assert out.dtype == np.float32 and out.tolist() == [[0.0, np.float32(0.2), 1.0]]
    with pytest.raises(TypeError, match="float64"):
        to_float(out.astype(np.float64))


# --- user folders and stale caches -----------------------------------------------------

def test_user_folder(tmp_path):
    arrays = synthetic(np.random.default_rng(0))
    folder = write_folder(tmp_path / "fashion", arrays)
    data = load_mnist(folder, cache_dir=tmp_path / "cache")
    assert data.path.parent == tmp_path / "cache" / "idx-arrow"
    np.testing.assert_array_equal(data.train.images, arrays["train_images"].reshape(50, 784))
    np.testing.assert_array_equal(data.test.labels, arrays["test_labels"])
    assert set(data.sources) == {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte",
                                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte.gz"}
    assert load_mnist(folder, cache_dir=tmp_path / "cache").path == data.path
    # A changed source file gives a new cache entry, never a stale one.
    write_idx(folder / NAMES["test_images"], arrays["test_images"][::-1].copy())
    changed = load_mnist(folder, cache_dir=tmp_path / "cache")
    assert changed.path != data.path
    np.testing.assert_array_equal(changed.test.images[0], arrays["test_images"][-1].ravel())


@pytest.mark.parametrize("problem, error, text", [
    ("missing", FileNotFoundError, "t10k-labels-idx1-ubyte"),
    ("both", ValueError, "both"),
    ("shape", ValueError, r"\(N, 28, 28\)"),
    ("range", ValueError, "labels 0..9"),
    ("count", ValueError, "holds 49 labels"),
    ("dtype", ValueError, "uint8 labels"),
])
def test_user_folder_errors(tmp_path, problem, error, text):
    rng = np.random.default_rng(1)
    arrays = synthetic(rng, shape=(28, 27) if problem == "shape" else (28, 28))
    if problem == "range":
        arrays["train_labels"][3] = 10
    if problem == "count":
        arrays["train_labels"] = arrays["train_labels"][:49]
    if problem == "dtype":
        arrays["test_labels"] = arrays["test_labels"].astype(np.int32)
    folder = write_folder(tmp_path / "f", arrays)
    if problem == "missing":
        (folder / (NAMES["test_labels"] + ".gz")).unlink()
    if problem == "both":
        write_idx(folder / (NAMES["train_labels"] + ".gz"), arrays["train_labels"])
    with pytest.raises(error, match=text) as info:
        load_mnist(folder, cache_dir=tmp_path / "cache")
    assert str(folder) in str(info.value)


def test_user_folder_not_a_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        load_mnist(tmp_path / "nothing-here", cache_dir=tmp_path)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="file"):
        load_mnist(tmp_path / "file", cache_dir=tmp_path)


@pytest.mark.parametrize("content", ["garbage", "foreign", "stale"])
def test_bad_cached_arrow_is_rebuilt(tmp_path, mnist, content):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in MNIST_SHA256:
        shutil.copy(fetch_mnist() / name, folder / name)
    target = folder / "mnist.arrow"
    if content == "garbage":
        target.write_bytes(b"not arrow at all")
    elif content == "foreign":
        with pa.ipc.new_file(str(target), pa.schema([("x", pa.int8())])) as writer:
            writer.write_table(pa.table({"x": pa.array([1], pa.int8())}))
    else:  # a valid file, but built from other sources
        meta = {**mnist.train.table.schema.metadata, b"sparana.sources": b'{"x": "y"}'}
        with pa.ipc.new_file(str(target), mnist.train.table.schema.with_metadata(meta)) as writer:
            for split in (mnist.train, mnist.test):
                writer.write_table(split.table.replace_schema_metadata(meta))
    if content != "stale":
        with pytest.raises(ArrowFormatError, match="mnist.arrow"):
            MnistData.open(target)
    rebuilt = load_mnist(cache_dir=tmp_path)
    assert rebuilt.path == target and rebuilt.sources == MNIST_SHA256
    assert np.bincount(rebuilt.train.labels).tolist() == TRAIN_COUNTS


def test_open_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="x.arrow"):
        MnistData.open(tmp_path / "x.arrow")
