"""The minibatch loader (the original ``data_loader.loader``) and the base all loaders share."""

from __future__ import annotations

import numpy as np

from ._arrow import ArrowSplit, MnistData
from ._examples import as_samples, batch_converter, class_ids, resolve_num_classes
from ._sampling import EpochSampler


class _BaseLoader:
    """Checked training and test arrays, turned into (data, labels) batches by index."""

    def __init__(self, training_data, training_labels, test_data, test_labels, *,
                 seed=None, one_hot=True, num_classes=None):
        self._x = as_samples(training_data, "training_data")
        self._test_x = as_samples(test_data, "test_data")
        if self._x.shape[1] != self._test_x.shape[1]:
            raise ValueError(f"training_data has {self._x.shape[1]} features per sample but "
                             f"test_data has {self._test_x.shape[1]}")
        train = class_ids(training_labels, "training_labels", len(self._x), "training_data")
        test = class_ids(test_labels, "test_labels", len(self._test_x), "test_data")
        self.num_classes = resolve_num_classes(
            num_classes, (*train, "training_labels"), (*test, "test_labels"))
        self._y, self._test_y = train[0], test[0]
        self._convert = batch_converter(self._x)
        self._convert_test = batch_converter(self._test_x)
        self.one_hot = bool(one_hot)
        self.seed = seed  # as given, for the record
        self._rng = np.random.default_rng(seed)
        self._test_index = slice(None)  # which test samples test_data()/test_labels() return
        self._test_cache = None

    @classmethod
    def from_mnist(cls, data, *args, test: ArrowSplit | None = None, **kwargs):
        """Build from :class:`MnistData` (its train and test splits), or from an
        :class:`ArrowSplit` (such as a shard) as training set plus ``test=`` another.

        Extra positional and keyword arguments go to the constructor;
        ``num_classes`` defaults to 10.
        """
        if isinstance(data, MnistData):
            if test is not None:
                raise TypeError("from_mnist: test= is only for an ArrowSplit; "
                                "MnistData brings its own test split")
            data, test = data.train, data.test
        elif not isinstance(data, ArrowSplit) or not isinstance(test, ArrowSplit):
            raise TypeError("from_mnist expects MnistData, or an ArrowSplit with test=<ArrowSplit>;"
                            f" got {type(data).__name__} and test={type(test).__name__}")
        kwargs.setdefault("num_classes", 10)
        return cls(data.images, data.labels, test.images, test.labels, *args, **kwargs)

    @property
    def training_size(self) -> int:
        """Number of training samples given (for split_loader: before holding classes out)."""
        return len(self._x)

    @property
    def label_width(self) -> int:
        """Width of the one-hot label rows returned."""
        return self.num_classes

    def _spawn(self) -> np.random.Generator:
        return self._rng.spawn(1)[0]

    def _out_ids(self, ids: np.ndarray) -> np.ndarray:
        """Map class ids to label columns (identity here; split_loader relabels)."""
        return ids

    def _labels(self, columns: np.ndarray) -> np.ndarray:
        if self.one_hot:
            out = np.zeros((len(columns), self.label_width), np.float32)
            out[np.arange(len(columns)), columns] = 1
            return out
        return columns.astype(np.int64)

    def _train_batch(self, idx: np.ndarray, columns: np.ndarray | None = None):
        """(data, labels) of training rows ``idx``; ``columns`` overrides the label columns."""
        if columns is None:
            columns = self._out_ids(self._y[idx])
        return self._convert(self._x[idx]), self._labels(columns)

    def _test_cached(self):
        if self._test_cache is None:
            idx = self._test_index
            data = self._convert_test(self._test_x[idx])
            labels = self._labels(self._out_ids(self._test_y[idx]))
            data.flags.writeable = labels.flags.writeable = False
            self._test_cache = data, labels
        return self._test_cache

    def test_data(self) -> np.ndarray:
        """The test samples, converted like batches (computed once; read-only)."""
        return self._test_cached()[0]

    def test_labels(self) -> np.ndarray:
        """The test labels, encoded like batch labels (computed once; read-only)."""
        return self._test_cached()[1]


class Loader(_BaseLoader):
    """Minibatches of a training set in shuffled epochs, plus its test set.

    ``minibatch`` walks through a random permutation of the training set; the last
    partial batch of each epoch is dropped and an epoch is counted when the next one
    begins (60000 samples with batch 128: 468 batches per epoch).

    Data: uint8 images (batches come back as float32 in [0, 1]) or floating arrays
    (float64 stays float64, other floats become float32), shape (N, features...);
    trailing dimensions are flattened.  Labels: integer class ids or one-hot rows;
    returned as one-hot float32 rows if ``one_hot`` else as int64 ids.
    ``num_classes`` defaults to the one-hot width or the largest id + 1.  The arrays
    are referenced, never copied: a batch gathers only its own rows, and every batch
    is a new array the caller may keep.  ``seed`` (None, an int, a SeedSequence or a
    Generator) feeds ``numpy.random.default_rng``; numpy's global RNG is never used.
    """

    def __init__(self, training_data, training_labels, test_data, test_labels,
                 seed=None, one_hot=True, num_classes=None):
        super().__init__(training_data, training_labels, test_data, test_labels,
                         seed=seed, one_hot=one_hot, num_classes=num_classes)
        self._sampler = EpochSampler(np.arange(len(self._x)), self._spawn())

    @property
    def epochs(self) -> int:
        """Completed epochs (counted when the next epoch begins)."""
        return self._sampler.epochs

    @property
    def minibatches(self) -> int:
        """Batches returned by :meth:`minibatch`."""
        return self._sampler.minibatches

    def minibatch(self, batch_size: int):
        """The next ``(data, labels)`` batch of the current epoch."""
        return self._train_batch(self._sampler.next(batch_size))

    def random_minibatch(self, batch_size: int):
        """A random ``(data, labels)`` batch without replacement.

        Drawn from its own random stream: neither the counters nor the epoch order of
        :meth:`minibatch` are affected.
        """
        return self._train_batch(self._sampler.sample(batch_size))

    def print_stats(self) -> None:
        """Print the epoch and minibatch counters."""
        print(f"Epochs: {self.epochs}")
        print(f"Minibatches: {self.minibatches}")
