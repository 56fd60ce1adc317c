"""Dynamic sparse training on the cluster: the driver rewires the master's sparse layers between rounds.

Before round r (r >= 1, every ``every`` rounds, before ``end``) the driver rewires the master
with a :class:`sparana.Rewirer` step at the schedule's fraction for step r; the workers then get
the new pattern with the weights (a CSR payload), train it, and the mix keeps it. The round's
random stream is ``SeedSequence(seed, spawn_key=(REWIRE_STREAM, r))``: SET's growth and RigL's
batch (``samples`` rows of the training data, whose gradient ranks the growth on the driver) are
the same in a resumed run, so that rewiring is deterministic from the seed and a run resumed from
a round checkpoint continues as if it had never stopped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .._checks import check_integer, check_ratio
from ..data import load_mnist, to_float
from ..sparsity._pruning import rewire_fraction
from ..sparsity._rewire import METHODS, Rewirer

# The spawn key's first entry of the rewiring streams (the workers use their index, the vulcanizer 2**31 - 1).
REWIRE_STREAM = 2**31 - 2


@dataclass
class Rewiring:
    """Rewiring of the master's sparse layers on the driver, before every ``every``-th round.

    ``method``: 'SET' or 'RigL'; ``fraction`` decays with ``schedule`` ('cosine', 'linear',
    'constant') over the rounds, to 0 at round ``end`` (default: the experiment's rounds).
    ``layers``: indices to rewire (default every sparse layer). ``samples``: rows of ``data`` (an
    ArrowSplit; default the experiment's training split, or MNIST's) whose gradient RigL ranks.
    ``init_method``: SET's rule for new weights (scaled by the live fans).
    """

    method: str = "SET"
    fraction: float = 0.3
    every: int = 1
    schedule: str = "cosine"
    end: int | None = None
    layers: list | None = None
    samples: int = 256
    init_method: str = "Xavier"
    data: object = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        check_integer("every", self.every, low=1)
        check_integer("samples", self.samples, low=1)
        if self.end is not None:
            check_integer("end", self.end, low=1)
        check_ratio("fraction", self.fraction)
        rewire_fraction(self.fraction, 0, 1, self.schedule)  # refuses an unknown schedule

    def fraction_at(self, round_index, rounds):
        """The fraction rewired before ``round_index`` (0 when that round does not rewire)."""
        end = self.end or rounds
        if round_index == 0 or round_index % self.every:
            return 0.0
        return rewire_fraction(self.fraction, round_index, end, self.schedule)

    def as_dict(self):
        return {"method": self.method, "fraction": self.fraction, "every": self.every, "schedule": self.schedule,
                "end": self.end, "layers": self.layers, "samples": self.samples, "init_method": self.init_method,
                "data_rows": None if self.data is None else len(self.data)}


def rewire_round(model, spec, round_index, rounds, seed, train=None, loss="cross_entropy"):
    """Rewire the master before ``round_index`` if the spec says so; return the round's figures.

    ``train``: the experiment's training split (for RigL's batch) when ``spec.data`` is None;
    ``loss``: the workers' loss, whose gradient RigL ranks.
    """
    fraction = spec.fraction_at(round_index, rounds)
    if fraction == 0:
        return {}
    start = time.perf_counter()
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(REWIRE_STREAM, round_index)))
    rewirer = Rewirer(model, spec.method, fraction, schedule="constant", seed=rng, layers=spec.layers,
                      init_method=spec.init_method, loss=loss)
    inputs = labels = None
    if spec.method == "RigL":
        split = spec.data or train or load_mnist().train
        rows = np.sort(rng.choice(len(split), size=min(spec.samples, len(split)), replace=False))
        inputs, labels = to_float(split.images[rows]), split.labels[rows].astype(np.int64)
    replaced = rewirer.rewire(inputs, labels)
    return {"rewired": int(sum(replaced)), "rewire_fraction": float(fraction),
            "rewire_seconds": time.perf_counter() - start}
