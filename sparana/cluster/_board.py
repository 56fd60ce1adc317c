"""TensorBoard scalars of an experiment's rounds (see :mod:`sparana.io._tensorboard`).

An experiment named ``name`` with ``log_dir=`` writes one TensorBoard run for
the driver and one per worker, so that TensorBoard draws the workers' curves
in one chart::

    <log_dir>/<name>/driver      driver/accuracy (the master's test accuracy), driver/loss,
                                 driver/worker_accuracy, driver/sparsity (when pruning),
                                 driver/samples, driver/round_seconds, ... (every figure of the round)
    <log_dir>/<name>/worker-<i>  worker/loss, worker/accuracy, worker/samples_per_second, worker/seconds

The step of every scalar is the round. ``tensorboard --logdir results/``
shows them while the experiment runs (each round is flushed as it ends).
"""

from __future__ import annotations

import numbers
from pathlib import Path

from ..io._tensorboard import ScalarWriter


class RoundBoard:
    """Writes each round's figures (the driver's and each worker's) as TensorBoard scalars."""

    def __init__(self, log_dir, name):
        self.folder = Path(log_dir) / name.replace(" ", "_").replace("/", "_")
        self.driver = ScalarWriter(self.folder / "driver")
        self.workers = {}

    def add_round(self, figures, outputs):
        """``figures``: the driver's figures of the round (see ExperimentResult.rounds); ``outputs``: the workers'."""
        step = figures["round"]
        self.driver.add_scalars({f"driver/{key}": value for key, value in figures.items()
                                 if key != "round" and isinstance(value, numbers.Real)}, step)
        for position, output in enumerate(outputs):
            index = output.get("worker", position)
            if index not in self.workers:
                self.workers[index] = ScalarWriter(self.folder / f"worker-{index}")
            seconds = output.get("seconds")
            self.workers[index].add_scalars({
                "worker/loss": output.get("loss"), "worker/accuracy": output.get("accuracy"),
                "worker/samples_per_second": output["samples"] / seconds if seconds else None,
                "worker/seconds": seconds}, step)
