"""Shuffled-epoch sampling of index sets, shared by all loaders."""

from __future__ import annotations

import numpy as np


def check_count(value, name: str, low: int, high: int | None = None, what: str = "") -> int:
    """Return ``value`` as an int if it is an integer in [low, high], else raise naming both.

    ``high=None`` means no upper bound; ``what`` explains the bounds in the message.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{name} must be {bounds}{f' ({what})' if what else ''}, got {value}")
    return int(value)


def even_sizes(total: int, parts: int) -> list[int]:
    """``parts`` sizes summing to ``total`` that differ by at most one (larger first)."""
    size, extra = divmod(total, parts)
    return [size + (i < extra) for i in range(parts)]


class EpochSampler:
    """Draws batches of indices from a fixed index set, epoch by epoch.

    Each epoch is a fresh random permutation of ``indices``; batches are consecutive
    slices of it.  A batch that would run past the end starts the next epoch instead
    (the remainder is dropped) and only then is ``epochs`` incremented -- so
    ``epochs`` counts completed epochs, counted when the next one begins.

    :meth:`sample` draws a random batch without replacement from a separate stream,
    so it neither changes the current epoch's order nor the later epochs' orders.
    """

    def __init__(self, indices, rng: np.random.Generator, name: str = "the training set"):
        self.indices = np.array(indices, dtype=np.intp)  # own copy, made read-only
        self.indices.flags.writeable = False
        self.name = name
        self._epoch_rng, self._sample_rng = rng.spawn(2)
        self._order = self._new_order()
        self._position = 0
        self.epochs = 0
        self.minibatches = 0

    def __len__(self) -> int:
        return len(self.indices)

    def _new_order(self) -> np.ndarray:
        order = self._epoch_rng.permutation(self.indices)
        order.flags.writeable = False
        return order

    def check(self, batch_size) -> int:
        """``batch_size`` as an int if this set can provide it, else raise."""
        return check_count(batch_size, "batch_size", 1, len(self),
                           f"{self.name} holds {len(self)} samples")

    def next(self, batch_size) -> np.ndarray:
        """The next ``batch_size`` indices of the current epoch (a read-only view)."""
        batch_size = self.check(batch_size)
        if self._position + batch_size > len(self):
            self._order = self._new_order()
            self._position = 0
            self.epochs += 1
        start = self._position
        self._position += batch_size
        self.minibatches += 1
        return self._order[start:self._position]  # never modified in place

    def sample(self, batch_size) -> np.ndarray:
        """``batch_size`` distinct random indices; counters and epoch order are untouched."""
        return self._sample_rng.choice(self.indices, self.check(batch_size), replace=False)
