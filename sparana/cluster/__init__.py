"""Sparana on Ray: workers holding models or submodels on their own GPU (or CPU), and the
driver's experiments (shard training with mixing and pruning, vulcanized training with mind meld).

    import sparana as sa
    from sparana import cluster

    cluster.init(local_mode=True)              # embedded Ray, every worker on the CPU
    workers = cluster.ray_workers(4, seed=0)   # four shards of MNIST, one per actor
    model = sa.documentation_model(comp_type="CPU", seed=0)
    result = cluster.train_and_mix(model, workers, rounds=5, local_steps=100)

Ray 2.54 removed ``ray.init(local_mode=True)``; ``cluster.init(local_mode=True)`` replaces it.

Experiments from config files (``load_config``, ``run_experiment``), sweeps of them on Ray Tune
(``run_sweep``; Tune is imported only then) and their reports (``write_report``) are what the
``sparana`` command runs.
"""

from ._config import Config, experiment_config, load_config
from ._experiments import ExperimentResult, Pruning, train_and_mix, vulcanize
from ._grafana import add_grafana_dashboard
from ._init import ClusterError, ClusterInfo, init, is_local_mode, shutdown
from ._placement import local_workers, ray_workers
from ._pool import LocalPool, RayPool
from ._report import ReportError, write_report
from ._rewiring import Rewiring
from ._runner import build_model, load_data, run_experiment
from ._schema import ConfigError
from ._sweep import SweepError, SweepUnfinished, run_sweep
from ._worker import TrainSettings, WorkerCore, load_payload, model_payload

__all__ = [
    "ClusterError", "ClusterInfo", "Config", "ConfigError", "ExperimentResult", "LocalPool", "Pruning", "RayPool",
    "ReportError", "Rewiring", "SweepError", "SweepUnfinished", "TrainSettings", "WorkerCore", "add_grafana_dashboard",
    "build_model", "experiment_config", "init",
    "is_local_mode", "load_config", "load_data", "load_payload", "local_workers", "model_payload", "ray_workers",
    "run_experiment", "run_sweep", "shutdown", "train_and_mix", "vulcanize", "write_report",
]
