"""What one worker does, as a plain class: Ray runs it as an actor, the tests run it in-process.

A worker holds one data shard (zero-copy views of an Arrow table) and the test
set. Every call is self-contained: it gets the weights it works on (the model
it last built is kept only to reuse its arrays), so a worker restarted between
two calls answers the next one as if nothing happened. A training call gets
the round's starting weights and its round number, builds a fresh optimizer, and draws its batches from the stream
``SeedSequence(seed, spawn_key=(worker, round))`` -- the (round)-th child of
the worker's stream ``SeedSequence(seed).spawn(n)[worker]``. So a round done
again (after a worker was lost) or after a resume gives the same result.
Only weights, masks and figures cross the wire, never batches.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import asdict, dataclass

import numpy as np

from ..io._description import (apply_layer_tensors, architecture_mismatch, describe_model, layer_tensors,
                               model_from_description)
from ..nn._optimizers import AdamOptimizer, SGDOptimizer
from ..sparsity._statistics import compute as compute_statistics
from ..data import ArrowSplit, Loader, to_float
from ._metrics import record_worker
from ._reduce import combine, contribution

OPTIMIZERS = {"adam": AdamOptimizer, "sgd": SGDOptimizer}


@dataclass
class TrainSettings:
    """How each worker trains in a round."""

    optimizer: str = "adam"
    learning_rate: float = 1e-3
    batch_size: int = 128
    loss: str = "cross_entropy"
    momentum: float = 0.0

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {tuple(OPTIMIZERS)}, got {self.optimizer!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")

    def make(self, model):
        options = {"momentum": self.momentum} if self.optimizer == "sgd" else {}
        return OPTIMIZERS[self.optimizer](model, self.learning_rate, loss=self.loss, **options)

    def as_dict(self):
        return asdict(self)


def model_payload(model):
    """The model as plain data: its architecture and host copies of every layer's tensors."""
    return {"architecture": describe_model(model), "layers": [layer_tensors(layer) for layer in model.layers]}


def load_payload(payload, model=None, comp_type="CPU"):
    """``model`` holding the payload's parameters (a new model if ``model`` does not fit)."""
    if model is None or architecture_mismatch(payload["architecture"], model):
        model = model_from_description(payload["architecture"], comp_type)
    for layer, tensors in zip(model.layers, payload["layers"]):
        apply_layer_tensors(layer, tensors)
    return model


def round_seed(seed, worker, round_index):
    """The worker's random stream for one round (see the module docstring)."""
    return np.random.SeedSequence(seed, spawn_key=(worker, round_index))


class WorkerCore:
    """One worker's state and operations (see the module docstring).

    ``shard`` and ``test`` are :class:`ArrowSplit` objects or Arrow tables
    (as they arrive from Ray's object store: their arrays are views, not copies).
    """

    def __init__(self, shard, test, seed, index, comp_type="CPU", experiment="", role="trainer"):
        self.shard = shard if isinstance(shard, ArrowSplit) else ArrowSplit.from_table(shard)
        self.test = test if isinstance(test, ArrowSplit) or test is None else ArrowSplit.from_table(test)
        self.seed = seed
        self.index = int(index)
        self.comp_type = comp_type
        self.experiment = experiment
        self.role = role
        self.model = None
        self.prefix = None

    # ----------------------------------------------------------------- training
    def train_round(self, payload, round_index, steps, settings, prefix=None, plan=None):
        """Train the payload's model for ``steps`` minibatches of this shard; return the new payload and figures.

        ``prefix`` (a payload): a model whose outputs are the trained model's
        inputs (the main model's first layers, for a vulcanized submodel).
        ``plan``: the submodel's vulcanizer plan; its consolidation weights are
        reverted after every step, so that only real units learn.
        """
        figures = self._train(payload, round_index, steps, settings, prefix, plan)
        return dict(figures, payload=model_payload(self.model))

    def train_contribution(self, payload, round_index, steps, settings, statistics=None):
        """Train as :meth:`train_round`; return (figures, this worker's contribution to the mix).

        ``statistics``: (criterion, samples) for importance mixing: the trained
        model's statistics on ``samples`` rows of the shard weight its changes.
        See :mod:`._reduce`.
        """
        figures = self._train(payload, round_index, steps, settings)
        stats = None if statistics is None else self._statistics(self.model, *statistics, round_index=round_index)
        return figures, contribution(self.model, payload, stats)

    @staticmethod
    def combine(a, b):
        """The sum of two contributions (a step of the reduction tree)."""
        return combine(a, b)

    def _train(self, payload, round_index, steps, settings, prefix=None, plan=None):
        settings = settings if isinstance(settings, TrainSettings) else TrainSettings(**settings)
        start = time.perf_counter()
        rng = np.random.default_rng(round_seed(self.seed, self.index, round_index))
        self.model = load_payload(payload, self.model, self.comp_type)
        self.model.reseed(rng)  # dropout draws from the round's stream
        if prefix is not None:
            self.prefix = load_payload(prefix, self.prefix, self.comp_type)
        optimizer = settings.make(self.model)
        loader = self._loader(rng)
        total = 0.0
        for _ in range(steps):
            x, y = loader.minibatch(settings.batch_size)
            if prefix is not None:
                x = self.prefix.outputs(x)
            total += optimizer.train_step(x, y)
            if plan is not None:
                plan.revert(self.model)
        accuracy = self.model.get_accuracy(x, y)  # on the last minibatch, after its step
        seconds = time.perf_counter() - start
        figures = {"loss": total / max(steps, 1), "accuracy": accuracy, "steps": steps,
                   "samples": steps * settings.batch_size, "seconds": seconds, "worker": self.index}
        record_worker(self.experiment, self.role, self.index, figures["loss"], accuracy,
                      figures["samples"] / seconds, self.memory()["gpu_used"] if self.model.backend.is_gpu else None)
        return figures

    def _loader(self, rng):
        shard = self.shard  # (the loader's test set is not used here)
        return Loader(shard.images, shard.labels, shard.images, shard.labels, seed=rng, one_hot=False,
                      num_classes=self.model.layers[-1].size)  # any data set: as many classes as outputs

    # --------------------------------------------------------------- inspection
    def statistics(self, payload, criterion="MAAV", samples=1000, round_index=0):
        """Weight statistics of the payload's model on ``samples`` rows of the shard."""
        self.model = load_payload(payload, self.model, self.comp_type)
        return self._statistics(self.model, criterion, samples, round_index)

    def _statistics(self, model, criterion, samples, round_index):
        rng = np.random.default_rng(round_seed(self.seed, self.index, round_index))
        rows = np.sort(rng.choice(len(self.shard), size=min(samples, len(self.shard)), replace=False))
        return compute_statistics(model, criterion, to_float(self.shard.images[rows]))

    def evaluate(self, payload):
        """Test accuracy of the payload's model."""
        if self.test is None:
            raise RuntimeError("this worker has no test set")
        self.model = load_payload(payload, self.model, self.comp_type)
        x = to_float(self.test.images)
        return self.model.get_accuracy(x, self.test.labels.astype(np.int64))

    def memory(self):
        """Peak resident memory of the worker process, and GPU memory in use (bytes)."""
        info = {"peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "gpu_used": 0,
                "pid": os.getpid()}
        if self.model is not None and self.model.backend.is_gpu:
            info["gpu_used"] = int(self.model.backend.xp.get_default_memory_pool().used_bytes())
        return info

    def shard_info(self):
        """Where the shard's image bytes live (to show they were not copied) and its size."""
        buffer = self.shard.table.column("image").chunk(0).values.buffers()[1]
        return {"address": buffer.address, "bytes": buffer.size, "rows": len(self.shard), "pid": os.getpid(),
                "writeable": bool(self.shard.images.flags.writeable),
                "mapping": _mapping_of(buffer.address)}

    def ping(self):
        return {"worker": self.index, "role": self.role, "experiment": self.experiment, "pid": os.getpid()}


def _mapping_of(address):
    """The /proc/self/maps line holding ``address`` (Linux), e.g. Ray's shared-memory object store."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                low, high = (int(part, 16) for part in line.split()[0].split("-"))
                if low <= address < high:
                    return line.split(None, 5)[-1].strip() if len(line.split()) > 5 else ""
    except OSError:
        pass
    return None

