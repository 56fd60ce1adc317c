"""One experiment of a checked config (see :mod:`._config`): its data set, model, workers and rounds.

The config's ``experiment`` maps onto the driver's experiments: ``train_and_mix`` and ``vulcanize``
are :func:`train_and_mix` and :func:`vulcanize` over ``workers`` Ray workers; ``prune_and_retrain``
is :func:`train_and_mix` with one worker training the whole training set, pruned by the driver
between rounds (``prune.targets``) and retrained; ``train`` is the same without pruning.

The experiment runs in one call of those functions, which checkpoint every round and hand each
round's figures to ``on_round`` (a report to Ray Tune, or the console); a run stopped anywhere
continues after its last completed round, to the weights an unstopped run reaches (the
experiments' rounds are self-contained; see :mod:`._experiments`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import sparana as sa

from ..data import dataset_shape, load_dataset
from ._experiments import Pruning, mean_sparsity, train_and_mix, vulcanize
from ._placement import ray_workers
from ._schema import ConfigError
from ._worker import TrainSettings

LAYERS = {"relu": sa.DenseReluLayer, "linear": sa.DenseLinearLayer, "softmax": sa.DenseSoftmaxLayer}
#: Figures of a round that go to Tune and the report (numbers only).
REPORTED = ("round", "accuracy", "loss", "worker_accuracy", "samples", "round_seconds", "train_seconds",
            "mix_seconds", "overhead_seconds", "driver_bytes", "sparsity", "parameters")


def load_data(config, source="config"):
    """The config's data set, after checking that the model's output layer has one unit per class."""
    return check_fits(config, load_dataset(config["data"]), source)


def check_fits(config, data, source="config"):
    """``data``, if the config's model has one output per class of it; else ConfigError."""
    _, classes = dataset_shape(data)
    size = config["model"]["layers"][-1][1]
    if size != classes:
        last = len(config["model"]["layers"]) - 1
        raise ConfigError(f"{source}: model.layers[{last}][1]: expected {classes} units (the data set has "
                          f"{classes} classes), got {size}")
    return data


def build_model(config, input_size):
    """The config's model on the driver's CPU, initialised from its seed."""
    spec = config["model"]
    model = sa.Model(input_size, [LAYERS[activation](size=size) for activation, size in spec["layers"]],
                     comp_type="CPU", seed=config["seed"])
    model.initialize_weights(spec["init"], bias_constant=spec["bias"])
    return model


def next_round(checkpoint):
    """The round after the last one a round checkpoint holds (0 when there is none)."""
    path = Path(checkpoint)
    return sa.read_checkpoint(path, tensors=False).extra["round"] + 1 if path.exists() else 0


def run_experiment(config, data=None, checkpoint=None, resume=False, on_round=None, model=None, workers=None,
                   cpus_per_worker=None, gpus_per_worker=None, comp_type=None, role=None, log_dir=None):
    """Run the experiment of ``config`` (a checked experiment dict); return its :class:`ExperimentResult`.

    ``checkpoint``: the round checkpoint file (default a temporary one); with ``resume`` the run
    continues after its last round when it exists. ``on_round(figures, result)`` is called after
    every round with that round's figures (:data:`REPORTED`). ``model`` and ``workers`` (a pool)
    are used instead of new ones when given (the pool is then left running); otherwise Ray workers
    start with ``cpus_per_worker``/``gpus_per_worker`` each, in the caller's placement group when
    it runs in one (a Tune trial), and stop at the end. ``log_dir``: a folder for TensorBoard
    scalars of every round (see :mod:`._board`).
    """
    data = data if data is not None else load_data(config)
    model = model if model is not None else build_model(config, data.train.images.shape[1])
    path = Path(checkpoint) if checkpoint is not None else Path(tempfile.mkdtemp(prefix="sparana-")) / "rounds.st"
    first = next_round(path) if resume else 0
    own = workers is None
    if own:
        workers = ray_workers(config["workers"], seed=config["seed"], data=data, experiment=config["name"],
                              role=role or ("submodel" if config["experiment"] == "vulcanize" else "trainer"),
                              cpus_per_worker=cpus_per_worker or 1, gpus_per_worker=gpus_per_worker,
                              comp_type=comp_type)

    def after_round(result):  # the figures as the final round gets them below (the checkpoint keeps its own)
        on_round(reported({**result.rounds[-1], **_model_figures(model, config)}), result)

    try:
        experiment = _experiment(config, model, workers, data, log_dir)
        # (with every round done, this loads the model and the figures from the checkpoint)
        result = experiment(config["rounds"], checkpoint=path, resume=path if first else None,
                            on_round=None if on_round is None else after_round)
    finally:
        if own:
            workers.shutdown()
    result.resumed_from = first or None
    result.rounds[-1].update(_model_figures(model, config))
    return result


def reported(figures):
    """The round's figures that are plain numbers (what Tune and the report take)."""
    return {key: figures[key] for key in REPORTED if isinstance(figures.get(key), (int, float))}


def summary(result):
    """The final figures of an experiment: accuracy, sparsity, stored parameters, rounds and wall time
    (the sum of the rounds' wall-clock times: training, mixing, pruning, evaluation)."""
    last = result.rounds[-1]
    return {"accuracy": last["accuracy"], "sparsity": last.get("sparsity", 0.0), "parameters": last.get("parameters"),
            "rounds": len(result.rounds), "wall_seconds": float(sum(r["round_seconds"] for r in result.rounds))}


def _experiment(config, model, workers, data, log_dir=None):
    """A function (rounds, checkpoint=, resume=, on_round=) running the config's experiment to that many rounds."""
    common = dict(settings=TrainSettings(**config["train"]), test=data.test, progress=False, name=config["name"],
                  seed=config["seed"], log_dir=log_dir)
    if config["experiment"] == "vulcanize":
        options = config["vulcanize"]

        def run(rounds, **io):  # io: checkpoint, resume, on_round
            return vulcanize(model, workers, options["sizes"], rounds, config["local_steps"], depth=options["depth"],
                             selection_type=options["selection"], consolidation=options["consolidation"],
                             std=options["std"], **common, **io)
        return run
    prune = config["prune"]
    pruning = None if prune is None else Pruning(dict(prune["targets"]), layers=prune["layers"],
                                                 criterion=prune["criterion"], samples=prune["samples"],
                                                 convert_at=prune["convert_at"], data=data.train)

    def run(rounds, **io):
        return train_and_mix(model, workers, rounds, config["local_steps"], mix=config["mix"], prune=pruning,
                             statistics_samples=config["statistics_samples"], **common, **io)
    return run


def _model_figures(model, config):
    """Sparsity (mean over the pruned layers, by default all but the last) and stored parameters."""
    layers = (config.get("prune") or {}).get("layers") or list(range(model.depth - 1)) or [0]
    return {"sparsity": mean_sparsity(model, layers), "parameters": model.parameter_count()}
