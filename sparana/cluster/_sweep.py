"""Sweeps on Ray Tune: every grid point and seed of a config's ``sweep:`` section is a Tune trial.

A trial reserves its driver and its workers together, through a placement-group factory: one
bundle for the trial function (the driver, which holds the master model) and one per worker. So
trials run side by side as far as the cluster allows, never oversubscribe it, and queue otherwise;
inside the trial, :func:`ray_workers` (``placement_group="auto"``) puts the workers in bundles 1..n.

Every round the trial reports its figures to Tune with a Tune checkpoint holding the Sparana round
checkpoint, so under ``results/<name>/`` lie Tune's own results (the experiment state, and per
trial ``params.json``, ``result.json``, ``progress.csv``, TensorBoard events when tensorboardX is
installed), each trial's last round checkpoint (``<trial>/checkpoint_NNNNNN/rounds.safetensors``),
``sparana-sweep.json`` (the config the sweep runs) and the report (:mod:`._report`).

Resuming (``resume=True``) restores the Tune experiment: finished trials are kept as they are,
unfinished and failed ones continue from their last round checkpoint (``Tuner.restore(...,
resume_unfinished=True, resume_errored=True)``). Tune is imported only here, when a sweep runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

import ray

from ..data import load_dataset
from ._report import SNAPSHOT, write_report
from ._runner import check_fits, load_data, run_experiment

CHECKPOINT = "rounds.safetensors"


class SweepError(RuntimeError):
    """A sweep that cannot start or resume as asked, or whose trials did not all finish."""


class SweepUnfinished(SweepError):
    """A sweep that ran but whose trials did not all finish (``--resume`` continues it)."""


def sweep_resources(config, local_mode=False):
    """{driver_cpus, cpus_per_worker, gpus_per_worker} of every trial: the config's ``sweep.resources``
    (else its ``resources``); by default 1 CPU each, and 1 GPU per worker where the cluster has GPUs."""
    given = (config.sweep or {}).get("resources") or config.raw.get("resources") or {}
    gpus = given.get("gpus_per_worker")
    if gpus is None:
        gpus = 0 if local_mode or ray.cluster_resources().get("GPU", 0) < 1 else 1
    return {"driver_cpus": float(given.get("driver_cpus", 1.0)), "cpus_per_worker": float(given.get(
        "cpus_per_worker") or 1.0), "gpus_per_worker": 0.0 if local_mode else float(gpus)}


def run_sweep(config, results="results", resume=False, local_mode=False, verbose=1, stream=None):
    """Run (or with ``resume`` continue) the sweep of ``config`` on the Ray this process is connected to.

    Writes the report (its table printed to ``stream`` when given) and returns its rows (one per
    grid point). Raises :class:`SweepError` when the results
    folder already holds another sweep, or when some trials did not finish (resume then).
    """
    from ray import tune

    folder = Path(results).resolve() / config.name
    snapshot = {"source": config.source, "config": config.raw, "sweep": config.sweep, "points": config.points(),
                "seeds": config.seeds(), "grid_keys": list(config.grid), "sparsity_keys": config.sparsity_keys()}
    restoring = _check_folder(folder, snapshot, resume, tune.Tuner.can_restore(folder))
    _prepare_data(config)  # fetched and converted once, here, before any trial (and checked against each model)
    resources = sweep_resources(config, local_mode)
    trainable = tune.with_resources(tune.with_parameters(sparana_trial, config=config, resources=resources),
                                    _placement(config, resources))
    param_space = {key: tune.grid_search(values) for key, values in config.grid.items()}
    param_space["seed"] = tune.grid_search(config.seeds())
    # Keeping one Tune checkpoint per trial forces an experiment snapshot after each round; Tune warns
    # when that happens often. Here it is what makes --resume continue from the latest round.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if restoring:
        tuner = tune.Tuner.restore(str(folder), trainable=trainable, param_space=param_space,
                                   resume_unfinished=True, resume_errored=True)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / SNAPSHOT).write_text(json.dumps(snapshot, indent=2, default=str) + "\n")
        tuner = tune.Tuner(trainable, param_space=param_space, tune_config=_tune_config(config, tune),
                           run_config=tune.RunConfig(name=config.name, storage_path=str(folder.parent),
                                                     checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                                     verbose=verbose))
    with _graceful_termination():
        grid = tuner.fit()
    rows = write_report(folder, stream=stream)
    # After a stop (Ctrl-C) the result grid calls every trial it knew of terminated; the experiment
    # state Tune saved tells which really finished (the others are pending or paused).
    statuses = [trial.status for trial in tune.ExperimentAnalysis(str(folder)).trials]
    total = len(config.points()) * len(config.seeds())
    finished = statuses.count("TERMINATED")
    if finished < total:
        failed = [str(result.error).strip().splitlines()[-1] for result in grid if result.error is not None][:3]
        raise SweepUnfinished(f"{total - finished} of {total} trials did not finish"
                         + (f" ({statuses.count('ERROR')} failed: {'; '.join(failed)})" if failed else "")
                         + f"; `sparana sweep {config.source} --resume` continues the sweep")
    return rows


def sparana_trial(params, config, resources):
    """One Tune trial: the experiment of one grid point and seed, reporting every round to Tune."""
    from ray import tune

    point = {key: value for key, value in params.items() if key != "seed"}
    experiment = config.experiment(point, params["seed"])
    folder = Path(tempfile.mkdtemp(prefix="sparana-trial-"))
    path = folder / CHECKPOINT
    restored = tune.get_checkpoint()  # set when Tune resumes this trial: continue after its last round
    if restored is not None:
        with restored.as_directory() as directory:
            shutil.copyfile(Path(directory) / CHECKPOINT, path)

    def report(figures, result):
        tune.report(figures, checkpoint=tune.Checkpoint.from_directory(folder))

    gpus = resources["gpus_per_worker"]
    try:
        # TensorBoard scalars of the trial's rounds in its folder (Tune writes its own only with tensorboardX)
        run_experiment(experiment, load_data(experiment, config.source), checkpoint=path, resume=True,
                       on_round=report, cpus_per_worker=resources["cpus_per_worker"], gpus_per_worker=gpus,
                       comp_type="GPU" if gpus else "CPU",
                       log_dir=Path(tune.get_context().get_trial_dir()) / "tensorboard")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _graceful_termination():
    """SIGTERM (what `ray job stop` sends first) stops the sweep as Ctrl-C does: Tune saves the state
    of every trial, so that ``--resume`` continues them (Tune stops on SIGUSR1 as on SIGINT)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGUSR1"):
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGUSR1))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _placement(config, resources):
    """The placement-group factory of a trial: {CPU: driver} + one {CPU, GPU} bundle per worker."""
    from ray import tune

    bundle = {"CPU": resources["cpus_per_worker"]}
    if resources["gpus_per_worker"]:
        bundle["GPU"] = resources["gpus_per_worker"]

    def factory(params):
        point = {key: value for key, value in params.items() if key != "seed"}
        workers = config.experiment(point, check=True)["workers"]
        return tune.PlacementGroupFactory([{"CPU": resources["driver_cpus"]}] + [dict(bundle)] * workers)

    return factory


def _tune_config(config, tune):
    sweep = config.sweep or {}
    scheduler = None
    stopping = sweep.get("early_stopping")
    if stopping:  # ASHA on the test accuracy, in rounds
        from ray.tune.schedulers import ASHAScheduler

        stopping = stopping if isinstance(stopping, dict) else {"grace_period": 1, "reduction_factor": 2.0}
        rounds = max(config.experiment(point)["rounds"] for point in config.points())
        scheduler = ASHAScheduler(time_attr="training_iteration", metric="accuracy", mode="max", max_t=rounds,
                                  grace_period=min(stopping["grace_period"], rounds),
                                  reduction_factor=stopping["reduction_factor"])
    return tune.TuneConfig(max_concurrent_trials=sweep.get("max_concurrent"), scheduler=scheduler,
                           reuse_actors=False)


def _prepare_data(config):
    """Load each data set of the grid once (fetched and converted here, not in the trials) and check
    every grid point's model against its data set."""
    loaded = {}
    for point in config.points():
        experiment = config.experiment(point)
        key = json.dumps(experiment["data"], sort_keys=True)
        if key not in loaded:
            loaded[key] = load_dataset(experiment["data"])
        check_fits(experiment, loaded[key], config.source)


def _check_folder(folder, snapshot, resume, restorable):
    """Whether to restore the Tune experiment in ``folder``; SweepError when it holds something else."""
    previous = folder / SNAPSHOT
    if not resume:
        if restorable or previous.exists():
            raise SweepError(f"{folder} holds a sweep already: `--resume` continues it; to start again, remove "
                             f"the folder or give the sweep another name")
        return False
    if not restorable:
        if previous.exists():
            raise SweepError(f"{folder} holds no Tune experiment state to resume (tuner.pkl is missing)")
        return False  # nothing to resume yet: start the sweep
    before = json.loads(previous.read_text()) if previous.exists() else {}
    now = json.loads(json.dumps(snapshot, default=str))
    changed = [key for key in ("config", "sweep") if before.get(key) != now[key]]
    if changed:
        keys = sorted({k for part in changed for k in set(before.get(part) or {}) | set(now[part] or {})
                       if (before.get(part) or {}).get(k) != (now[part] or {}).get(k)})
        raise SweepError(f"{snapshot['source']}: the config differs from the one {folder} was started with "
                         f"(in {', '.join(keys)}): resume with the same config, or start a new sweep under "
                         f"another name")
    return True
