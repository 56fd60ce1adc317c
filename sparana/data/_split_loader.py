"""A loader that holds some classes out (the original ``data_loader.split_loader``)."""

from __future__ import annotations

import math

import numpy as np

from ._loader import Loader, _BaseLoader
from ._sampling import EpochSampler, check_count, even_sizes


class SplitLoader(Loader):
    """A :class:`Loader` over the classes that remain after holding ``remove_classes`` out.

    Data, labels and ``seed`` are given as for :class:`Loader`.

    Label columns: the kept classes, in increasing order of their ids (``kept_classes[j]``
    is the original class of column ``j``), followed by ``add_classes`` extra columns
    that stay zero for main-set samples (room for new classes).  So every label row --
    from :meth:`minibatch`, :meth:`random_minibatch`, :meth:`test_labels` (padded too,
    unlike the original), the removed-class methods and :meth:`mixed_minibatch` -- has
    ``label_width = num_classes - len(remove_classes) + add_classes`` columns.  With
    ``one_hot=False`` the same column numbers are returned as int64 ids.

    A held-out class is named by its class id, as given in ``remove_classes``; it is
    returned labelled at the column ``label_index`` (default -1: the last column;
    negative values count from the end).  Several classes are requested with lists:
    ``index=[3, 4], label_index=[-2, -1]``.  Each held-out class has its own epochs and
    counters (``removed_epochs``, ``removed_minibatches``).  Held-out samples are kept
    as index arrays into the given data; nothing is copied.
    """

    def __init__(self, training_data, training_labels, test_data, test_labels,
                 remove_classes, add_classes=0, seed=None, one_hot=True, num_classes=None):
        # Not Loader.__init__: its sampler would cover every row, this one the kept classes.
        _BaseLoader.__init__(self, training_data, training_labels, test_data, test_labels,
                             seed=seed, one_hot=one_hot, num_classes=num_classes)
        classes = self.num_classes
        if isinstance(remove_classes, (int, np.integer)):
            raise TypeError(f"remove_classes must be a list of class ids, got {remove_classes!r}; "
                            f"use [{remove_classes}]")
        removed = [check_count(c, "remove_classes entry", 0, classes - 1, f"{classes} classes")
                   for c in remove_classes]
        if len(set(removed)) != len(removed) or len(removed) >= classes:
            raise ValueError(f"remove_classes must be distinct and leave at least one of the "
                             f"{classes} classes, got {list(remove_classes)}")
        self.add_classes = check_count(add_classes, "add_classes", 0, what="extra label columns")
        self.remove_classes = tuple(removed)
        self.kept_classes = np.setdiff1d(np.arange(classes), removed)
        self.kept_classes.flags.writeable = False
        self._relabel = np.full(classes, -1, np.intp)
        self._relabel[self.kept_classes] = np.arange(len(self.kept_classes))

        self._sampler = EpochSampler(np.flatnonzero(np.isin(self._y, self.kept_classes)),
                                     self._spawn(), "the kept classes' training set")
        self._removed = {c: EpochSampler(np.flatnonzero(self._y == c), self._spawn(),
                                         f"removed class {c}'s training set") for c in removed}
        self._test_index = np.flatnonzero(np.isin(self._test_y, self.kept_classes))
        self._removed_test = {c: np.flatnonzero(self._test_y == c) for c in removed}
        self._shuffle_rng = self._spawn()

    @property
    def label_width(self) -> int:
        return len(self.kept_classes) + self.add_classes

    @property
    def removed_epochs(self) -> dict[int, int]:
        """Completed epochs per removed class."""
        return {c: s.epochs for c, s in self._removed.items()}

    @property
    def removed_minibatches(self) -> dict[int, int]:
        """Batches drawn per removed class (by removed_minibatch and mixed_minibatch)."""
        return {c: s.minibatches for c, s in self._removed.items()}

    def _out_ids(self, ids: np.ndarray) -> np.ndarray:
        return self._relabel[ids]

    def _requests(self, index, label_index) -> list[tuple[int, int]]:
        """Check ``index``/``label_index`` (single or lists) into (class, column) pairs."""
        if isinstance(index, (list, tuple, np.ndarray)):
            listed = isinstance(label_index, (list, tuple, np.ndarray))
            if not listed or len(label_index) != len(index):
                raise TypeError(f"index is a list of {len(index)} classes, so label_index must be "
                                f"a list of as many columns; got {label_index!r}")
            if not len(index) or len(set(index)) != len(index):
                raise ValueError(f"index must list distinct removed classes, got {list(index)}")
            return [p for c, col in zip(index, label_index) for p in self._requests(c, col)]
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be a removed class id or a list of them, got {index!r}")
        if index not in self._removed:
            raise ValueError(f"index {index!r} is not a removed class; removed classes are "
                             f"{list(self.remove_classes)}")
        width = self.label_width
        column = check_count(label_index, "label_index", -width, width - 1,
                             f"{width} label columns")
        return [(int(index), column % width)]

    def _plan(self, batch_size, requests) -> list[tuple[EpochSampler, int, int | None]]:
        """``(sampler, size, label column)`` per request, sizes split evenly and all
        checked before anything is drawn (so a failing call changes no counter)."""
        check_count(batch_size, "batch_size", len(requests),
                    what=f"one sample or more for each of {len(requests)} classes")
        plan = [(self._removed[c], n, column)
                for (c, column), n in zip(requests, even_sizes(batch_size, len(requests)))]
        for sampler, n, _ in plan:
            sampler.check(n)
        return plan

    def _draw(self, plan, random: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Indices and label columns drawn by ``plan`` (column None: the samples' own)."""
        idx, columns = [], []
        for sampler, n, column in plan:
            drawn = sampler.sample(n) if random else sampler.next(n)
            idx.append(drawn)
            columns.append(self._out_ids(self._y[drawn]) if column is None else np.full(n, column))
        return np.concatenate(idx), np.concatenate(columns)

    def removed_minibatch(self, batch_size: int, index, label_index=-1):
        """The next batch of held-out class ``index`` (or classes: lists) in its own epochs.

        With lists, the batch is split as evenly as possible over the classes (grouped
        by class, in the order given), each class advancing its own epoch.
        """
        plan = self._plan(batch_size, self._requests(index, label_index))
        return self._train_batch(*self._draw(plan))

    def removed_random_minibatch(self, batch_size: int, index, label_index=-1):
        """Like :meth:`removed_minibatch`, but a random sample; counters are untouched."""
        plan = self._plan(batch_size, self._requests(index, label_index))
        return self._train_batch(*self._draw(plan, random=True))

    def mixed_minibatch(self, batch_size: int, index, removed_ratio: float, label_index=-1):
        """``floor(batch_size * (1 - removed_ratio))`` main samples plus held-out samples
        of ``index`` filling the batch up to ``batch_size``, jointly shuffled.

        Both parts advance their epochs and counters as :meth:`minibatch` and
        :meth:`removed_minibatch` do (10 samples at ratio 0.3: 7 main + 3 held out).
        """
        requests = self._requests(index, label_index)
        if not isinstance(removed_ratio, (int, float, np.floating)) or not 0 <= removed_ratio <= 1:
            raise ValueError(f"removed_ratio must be a number in [0, 1], got {removed_ratio!r}")
        batch_size = check_count(batch_size, "batch_size", 1)
        # The tolerance keeps 10 * (1 - 0.3) = 6.9999... style rounding from losing a sample.
        n_main = math.floor(batch_size * (1 - removed_ratio) + 1e-9)
        plan = self._plan(batch_size - n_main, requests) if n_main < batch_size else []
        if n_main:
            plan.insert(0, (self._sampler, self._sampler.check(n_main), None))
        idx, columns = self._draw(plan)
        order = self._shuffle_rng.permutation(batch_size)
        return self._train_batch(idx[order], columns[order])

    def removed_test_set(self, index, label_index=-1):
        """``(data, labels)`` of the test samples of held-out class(es) ``index``."""
        requests = self._requests(index, label_index)
        idx = [self._removed_test[c] for c, _ in requests]
        columns = np.repeat([col for _, col in requests], [len(i) for i in idx])
        return (self._convert_test(self._test_x[np.concatenate(idx)]), self._labels(columns))

    def print_stats(self) -> None:
        """Print the main-set counters, then each held-out class's."""
        super().print_stats()
        for c, sampler in self._removed.items():
            print(f"Removed class {c}: Epochs: {sampler.epochs} Minibatches: {sampler.minibatches}")
