"""The driver's experiments: shard training with mixing, and vulcanized training with mind meld.

The driver holds the master model. Every round it sends the master's weights
(and masks) to the workers once and the workers train in parallel on their own
shards or submodels. For mixing, the workers sum their changes among
themselves (a tree through the object store, :mod:`._reduce`), so the driver
receives one sum whatever their number; for vulcanizing, the driver melds the
submodels (each 1/k of the model). Then the driver prunes if asked, evaluates
the master on the test set and records the round's figures (as Ray metrics,
and with ``log_dir=`` as TensorBoard scalars, see :mod:`._board`). With
``checkpoint=`` every completed round ends with a
checkpoint of the master (see :mod:`._checkpoints`); ``resume=`` continues
after the last completed round of such a checkpoint. Workers start every
round from its starting weights with fresh optimizers and per-round random
streams, so a resumed run, or a round done again after a lost worker, gives
the same result as an undisturbed run with the same seeds.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field

import numpy as np
import ray
from tqdm.auto import tqdm

from ..sparsity._lobotomizer import Lobotomizer
from ..sparsity._pruning import sparsity as layer_sparsity
from ..sparsity._statistics import compute as compute_statistics
from ..compose._vulcanizer import Vulcanizer
from ..data import load_mnist, to_float
from ._board import RoundBoard
from ._checkpoints import RoundCheckpoints
from ._init import ClusterError, init
from ._placement import ray_workers
from ._metrics import record_driver
from ._reduce import apply as apply_mix
from ._rewiring import Rewiring, rewire_round
from ._worker import TrainSettings, load_payload, model_payload

MIXES = ("average", "importance")


@dataclass
class Pruning:
    """Pruning by the lobotomizer on the driver between rounds.

    ``targets``: {round: target sparsity of the pruned layers} (rounds count
    from 0; pruning happens before that round's training). ``layers``: indices
    of the layers to prune (default: all but the final one). ``criterion``:
    'absolute' or 'MAAV' (on ``samples`` rows of ``data``, an ArrowSplit,
    default the MNIST training split). ``convert_at``: from this sparsity on,
    the pruned layers become sparse (CSR) layers.
    """

    targets: dict
    layers: list | None = None
    criterion: str = "absolute"
    samples: int = 2000
    convert_at: float | None = None
    data: object = None

    def target(self, round_index):
        return self.targets.get(round_index)

    def as_dict(self):
        return {"targets": {str(k): v for k, v in sorted(self.targets.items())}, "layers": self.layers,
                "criterion": self.criterion, "samples": self.samples, "convert_at": self.convert_at,
                "data_rows": None if self.data is None else len(self.data)}


@dataclass
class ExperimentResult:
    """Per-round figures and the final master model."""

    name: str
    model: object
    rounds: list = field(default_factory=list)
    seed: int | None = None
    settings: dict = field(default_factory=dict)
    resumed_from: int | None = None

    @property
    def accuracy(self):
        return self.rounds[-1]["accuracy"] if self.rounds else None

    def as_dict(self):
        return {"name": self.name, "seed": self.seed, "settings": self.settings, "rounds": self.rounds,
                "resumed_from": self.resumed_from}


def train_and_mix(model, workers, rounds, local_steps, mix="average", prune=None, settings=None, test=None,
                  progress=True, name="train_and_mix", seed=None, statistics_samples=1000, checkpoint=None,
                  resume=None, data=None, log_dir=None, rewire=None, on_round=None):
    """Federated-style training: every round each worker trains the master's weights on its shard for
    ``local_steps`` minibatches, and the driver mixes the results into the master.

    ``mix``: 'average' (the model mixer's ``average_all``) or 'importance'
    (``importance_weighted_average`` with each worker's MAAV statistics on
    its shard). ``workers``: a worker pool (:func:`ray_workers`,
    :func:`local_workers`) or a number of Ray workers to start over shards of
    ``data`` (MnistData-like, default MNIST) and release at the end.
    ``prune``: a :class:`Pruning`. ``settings``: a :class:`TrainSettings` (or
    dict). ``test``: an ArrowSplit (default the test split of ``data``, or of
    MNIST). ``checkpoint``: a file to write after every round; ``resume``:
    such a file to continue from. ``log_dir``: a folder for TensorBoard
    scalars of every round (under ``<log_dir>/<name>/``). ``rewire``: a
    :class:`Rewiring` (dynamic sparse training: the driver rewires the master's
    sparse layers before the rounds it names, see :mod:`._rewiring`).
    ``on_round(result)``: called after every round (checkpointed by then). Returns an
    :class:`ExperimentResult`.
    """
    if mix not in MIXES:
        raise ValueError(f"mix must be one of {MIXES}, got {mix!r}")
    if rewire is not None and not isinstance(rewire, Rewiring):
        raise TypeError(f"rewire must be a cluster.Rewiring(...) (or None), got {type(rewire).__name__}")
    settings = _settings(settings)
    workers, owned = _pool(workers, seed, data)
    config = {"kind": "train_and_mix", "mix": mix, "local_steps": local_steps, "settings": settings.as_dict(),
              "prune": prune.as_dict() if prune else None, "statistics_samples": statistics_samples}
    if rewire is not None:  # (only then: the configurations of earlier checkpoints stay as they were)
        config["rewire"] = rewire.as_dict()

    def one_round(model, round_index):
        sparsity = _prune(model, prune, round_index) if prune else None
        rewired = rewire_round(model, rewire, round_index, rounds, seed, None if data is None else data.train,
                               settings.loss) if rewire else {}
        payload = model_payload(model)
        # each worker trains and weighs its own changes; the workers sum them among themselves
        wanted = ("MAAV", statistics_samples) if mix == "importance" else None
        outputs, total = workers.map_reduce("train_contribution", [(payload, round_index, local_steps, settings,
                                                                     wanted)] * len(workers))
        mixing = time.perf_counter()
        apply_mix(model, total)
        extra = {"driver_bytes": workers.driver_bytes, **rewired}
        if sparsity is not None:
            extra["sparsity"] = sparsity
        return outputs, mixing, extra

    try:
        return _run(name, model, rounds, local_steps, config, one_round, _test_split(test, data), progress, seed,
                    checkpoint, resume, log_dir, _experiment_tag(workers, name), on_round)
    finally:
        _release(workers, owned)


def vulcanize(model, workers, sizes, rounds, local_steps, settings=None, test=None, progress=True,
              name="vulcanize", seed=None, selection_type="random", consolidation="original", depth=None,
              checkpoint=None, resume=None, std=None, data=None, log_dir=None, on_round=None):
    """Independent subnetwork training: every round the driver splits the master's last layers
    into one disjoint submodel per worker, each worker trains its submodel (on its own GPU when it
    has one) on its shard, and the driver melds them back.

    ``sizes``: each submodel's layer sizes (the last being the number of
    classes; k * sizes[i] must fit in the layer), or None for even shares of
    the last ``depth`` layers (default all). See :meth:`Vulcanizer.split_models`;
    ``selection_type`` and ``std`` (the spread of 'normal') choose the units.
    The master's layers before the split travel to each worker once per round
    to compute its submodel's inputs. ``checkpoint``/``resume``/``log_dir``/``on_round`` as
    for :func:`train_and_mix`.
    """
    settings = _settings(settings)
    config = {"kind": "vulcanize", "sizes": None if sizes is None else list(sizes), "depth": depth,
              "local_steps": local_steps, "settings": settings.as_dict(), "selection_type": selection_type,
              "consolidation": consolidation}
    if std is not None:
        config["std"] = std
    Vulcanizer(model, selection_type=selection_type, std=std)  # refuse a bad selection before any work
    workers, owned = _pool(workers, seed, data)
    try:
        Vulcanizer(model).check_split(len(workers), depth=depth, sizes=sizes)  # refuse sizes that do not fit
    except BaseException:
        _release(workers, owned)
        raise

    def one_round(model, round_index):
        vulcanizer = Vulcanizer(model, selection_type=selection_type, std=std, seed=_round_seed(seed, round_index))
        submodels = vulcanizer.split_models(len(workers), depth=depth, consolidation=consolidation, sizes=sizes)
        plans = [vulcanizer.plan(sub) for sub in submodels]
        prefix = _prefix_payload(model, plans[0].start)
        outputs = workers.call("train_round", [(model_payload(sub), round_index, local_steps, settings, prefix, plan)
                                               for sub, plan in zip(submodels, plans)])
        mixing = time.perf_counter()
        vulcanizer.mind_meld([load_payload(o["payload"], sub) for o, sub in zip(outputs, submodels)])
        vulcanizer.discard()
        return outputs, mixing, {}

    try:
        return _run(name, model, rounds, local_steps, config, one_round, _test_split(test, data), progress, seed,
                    checkpoint, resume, log_dir, _experiment_tag(workers, name), on_round)
    finally:
        _release(workers, owned)


# --------------------------------------------------------------------- the loop
def _run(name, model, rounds, local_steps, config, one_round, test, progress, seed, checkpoint, resume,
         log_dir=None, experiment=None, on_round=None):
    """Run rounds [first, rounds) of an experiment: resume, train, evaluate, checkpoint, record.

    ``experiment``: the tag of the driver's Ray metrics (default ``name``); ``on_round(result)``
    is called after every round.
    """
    for label, value in (("rounds", rounds), ("local_steps", local_steps)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    result = ExperimentResult(name, model, seed=seed, settings=dict(config, rounds=rounds))
    first = 0
    if resume is not None:
        first, result.rounds = RoundCheckpoints(resume, name, config, seed).resume_into(model)
        result.resumed_from = first
    saver = RoundCheckpoints(checkpoint, name, config, seed) if checkpoint is not None else None
    test_x, test_y = _test_arrays(test)
    board = RoundBoard(log_dir, name) if log_dir is not None else None
    for round_index in tqdm(range(first, rounds), desc=name, disable=not progress, unit="round",
                            initial=first, total=rounds):
        start = time.perf_counter()
        try:
            outputs, mixing, extra = one_round(model, round_index)
        except ClusterError as exc:
            where = f"; its last checkpoint is {saver.path}: resume with resume=..." if saver and saver.exists() \
                else "; no checkpoint was written"
            raise ClusterError(f"experiment {name!r} stopped in round {round_index}: {exc}{where}") from exc
        accuracy = model.get_accuracy(test_x, test_y)
        result.rounds.append(_figures(round_index, outputs, start, mixing, accuracy, extra))
        if saver is not None:
            saver.save(model, round_index, result.rounds)
        if board is not None:
            board.add_round(result.rounds[-1], outputs)
        record_driver(experiment or name, round_index, accuracy, result.rounds[-1].get("sparsity"), stage=name)
        if on_round is not None:
            on_round(result)
    return result


# ------------------------------------------------------------------------ helpers
def _pool(workers, seed, data):
    """(pool, started here): a pool as given, or ``workers`` Ray workers started over shards of ``data``."""
    if callable(getattr(workers, "call", None)):  # a pool (LocalPool, RayPool, or one of the same shape)
        return workers, False
    if isinstance(workers, numbers.Integral) and not isinstance(workers, bool) and workers >= 1:
        if not ray.is_initialized():
            init()
        return ray_workers(int(workers), seed=seed, data=data), True
    raise TypeError("workers must be a worker pool (cluster.ray_workers(...) or cluster.local_workers(...)) "
                    f"or a positive integer (that many Ray workers), got {workers!r}")


def _experiment_tag(workers, name):
    """The experiment the workers' metrics carry (a :class:`RayPool`'s), else the driver's ``name``."""
    return getattr(workers, "experiment", None) or name


def _release(workers, owned):
    if owned:
        workers.shutdown()


def _test_split(test, data):
    return test if test is not None or data is None else data.test


def _settings(settings):
    if settings is None:
        return TrainSettings()
    return settings if isinstance(settings, TrainSettings) else TrainSettings(**settings)


def _test_arrays(test):
    data = test if test is not None else load_mnist().test
    return to_float(data.images), data.labels.astype(np.int64)


def _round_seed(seed, round_index):
    return None if seed is None else np.random.SeedSequence(seed, spawn_key=(2**31 - 1, round_index))


def _prefix_payload(model, start):
    """The master's first ``start`` layers as a payload (None when the submodel starts at the input)."""
    if start == 0:
        return None
    payload = model_payload(model)
    payload["architecture"] = dict(payload["architecture"], layers=payload["architecture"]["layers"][:start])
    payload["layers"] = payload["layers"][:start]
    return payload


def _prune(model, prune, round_index):
    """Prune to the round's target (if any); return the mean sparsity of the pruned layers."""
    target = prune.target(round_index)
    layers = prune.layers if prune.layers is not None else list(range(model.depth - 1))
    lobo = Lobotomizer(model)
    if target is not None:
        data = None
        if prune.criterion == "MAAV":
            images = (prune.data or load_mnist().train).images
            rows = np.random.default_rng(round_index).choice(len(images), min(prune.samples, len(images)),
                                                             replace=False)
            data = to_float(images[np.sort(rows)])
        lobo.set_statistics(compute_statistics(model, prune.criterion, data))
        lobo.prune_smallest(layers=[target if i in layers else None for i in range(model.depth)])
        if prune.convert_at is not None and target >= prune.convert_at:
            model.convert_to_sparse(layers)
    return mean_sparsity(model, layers)


def mean_sparsity(model, layers):
    """The mean sparsity of the model's ``layers`` (indices)."""
    return float(np.mean([layer_sparsity(model.layers[i]) for i in layers]))


def _figures(round_index, outputs, start, mixing, accuracy, extra):
    end = time.perf_counter()
    training = max(o["seconds"] for o in outputs)
    figures = {"round": round_index, "accuracy": accuracy,
               "loss": float(np.mean([o["loss"] for o in outputs])),
               "worker_accuracy": float(np.mean([o["accuracy"] for o in outputs])),
               "samples": int(sum(o["samples"] for o in outputs)),
               "round_seconds": end - start, "train_seconds": training,
               "mix_seconds": end - mixing, "overhead_seconds": max(end - start - training, 0.0), **extra}
    if not math.isfinite(figures["loss"]):
        raise FloatingPointError(f"round {round_index}: a worker's loss became {figures['loss']}; "
                                 "lower the learning rate")
    return figures
