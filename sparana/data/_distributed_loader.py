"""A loader over disjoint random shards of the training set (``data_loader.distributed_loader``)."""

from __future__ import annotations

import numpy as np

from ._loader import _BaseLoader
from ._sampling import EpochSampler, check_count


class DistributedLoader(_BaseLoader):
    """The training set split at random into ``subsets`` disjoint shards, plus a shared test set.

    Data, labels and ``seed`` are given as for :class:`Loader`.  Shard sizes follow
    ``numpy.array_split`` (103 samples in 4 shards: 26, 26, 26, 25).
    Each shard has its own shuffled epochs and counters (``epochs[i]``,
    ``minibatches[i]``); :meth:`combine_subsets` merges shards.  Shards are index arrays
    into the given data (see :meth:`shard_indices`); nothing is copied.
    """

    def __init__(self, training_data, training_labels, test_data, test_labels, subsets,
                 seed=None, one_hot=True, num_classes=None):
        super().__init__(training_data, training_labels, test_data, test_labels,
                         seed=seed, one_hot=one_hot, num_classes=num_classes)
        n = len(self._x)
        subsets = check_count(subsets, "subsets", 1, n, f"the training set holds {n} samples")
        parts = np.array_split(self._spawn().permutation(n), subsets)
        self._shards = [self._new_shard(p) for p in parts]
        self._random_rng = self._spawn()

    def _new_shard(self, indices) -> EpochSampler:
        return EpochSampler(np.sort(indices), self._spawn(), "the shard")

    def _shard(self, subset) -> EpochSampler:
        i = check_count(subset, "subset", 0, len(self._shards) - 1,
                        f"there are {len(self._shards)} shards")
        return self._shards[i]

    @property
    def num_subsets(self) -> int:
        return len(self._shards)

    @property
    def epochs(self) -> list[int]:
        """Completed epochs per shard."""
        return [s.epochs for s in self._shards]

    @property
    def minibatches(self) -> list[int]:
        """Batches drawn per shard by :meth:`minibatch`."""
        return [s.minibatches for s in self._shards]

    def shard_indices(self, subset: int) -> np.ndarray:
        """The training-set rows of shard ``subset``, sorted (read-only)."""
        return self._shard(subset).indices

    def minibatch(self, batch_size: int, subset: int):
        """The next ``(data, labels)`` batch of shard ``subset``'s current epoch."""
        return self._train_batch(self._shard(subset).next(batch_size))

    def random_minibatch(self, batch_size: int, subset: int | None = None):
        """A random batch without replacement from shard ``subset``, or from the whole
        training set if None; counters and epoch orders are untouched."""
        if subset is not None:
            return self._train_batch(self._shard(subset).sample(batch_size))
        n = len(self._x)
        check_count(batch_size, "batch_size", 1, n, f"the training set holds {n} samples")
        return self._train_batch(self._random_rng.choice(n, batch_size, replace=False))

    def combine_subsets(self, subsets) -> int:
        """Merge the listed shards into one with fresh epochs and zeroed counters.

        The merged shard takes the lowest listed position; the other listed shards are
        removed and the shards after them move down.  Returns the merged shard's index
        (``combine_subsets([0, 1, 2])`` merges the first three into shard 0).
        """
        if isinstance(subsets, (int, np.integer)):
            raise TypeError(f"combine_subsets expects a list of shard numbers, got {subsets!r}")
        listed = [check_count(s, "subsets entry", 0, len(self._shards) - 1,
                              f"there are {len(self._shards)} shards") for s in subsets]
        if not listed or len(set(listed)) != len(listed):
            raise ValueError(f"combine_subsets expects distinct shard numbers, got {list(subsets)}")
        target = min(listed)
        merged = self._new_shard(np.concatenate([self._shards[i].indices for i in listed]))
        self._shards = [merged if i == target else s for i, s in enumerate(self._shards)
                        if i == target or i not in listed]
        return target

    def print_stats(self) -> None:
        """Print the per-shard epoch and minibatch counters."""
        print(f"Epochs: {self.epochs}")
        print(f"Minibatches: {self.minibatches}")
