"""Ray metrics (``ray.util.metrics``): what workers and the driver export to the dashboard.

Workers export their loss, training accuracy, samples per second and (on a
GPU) device memory in use (0 on the CPU), tagged by experiment, role and
shard; the driver exports the round, the master model's test accuracy and
(when pruning) the sparsity of the pruned layers, tagged by experiment (the
one its workers carry, so that one selection of Sparana's Grafana dashboard
shows both) and stage (the driver's experiment name). Ray's metrics agent
serves them to Prometheus (names prefixed ``ray_``); the panels of
``sparana/cluster/grafana/sparana.json`` query them by these names.
Outside Ray nothing is recorded.
"""

from __future__ import annotations

import threading
import time

import ray

_GAUGES = {}
# Ray (2.60) exports a gauge's value only for about two report intervals (20 s) after it was
# last set, so a figure set once per round would vanish from Prometheus between long rounds.
# The last value of every series is set again every REFRESH_SECONDS while this process lives.
# Only the series set through this process's current Ray connection are refreshed.
REFRESH_SECONDS = 5.0
_LAST = {"connection": None, "series": {}}  # series: (name, tags) -> (gauge, value, tags)
_REFRESHER = []

WORKER_METRICS = {
    "sparana_worker_loss": "Mean training loss of the worker's last round",
    "sparana_worker_accuracy": "Training accuracy of the worker's last round (its last minibatches)",
    "sparana_worker_samples_per_second": "Training samples per second of the worker's last round",
    "sparana_worker_gpu_memory_bytes": "GPU memory the worker's CuPy pool holds",
}
DRIVER_METRICS = {
    "sparana_round": "Last completed round of the experiment",
    "sparana_master_accuracy": "Test accuracy of the master model after the last round",
    "sparana_sparsity": "Mean sparsity of the pruned layers after the last round's pruning",
}


def _gauge(name, description, tags):
    if name not in _GAUGES:
        from ray.util.metrics import Gauge

        _GAUGES[name] = Gauge(name, description=description, tag_keys=tags)
    return _GAUGES[name]


def record(values, tags, catalogue):
    """Set the gauges of ``catalogue`` named in ``values`` (None values are skipped), and keep them set."""
    if not ray.is_initialized():
        return
    tag_keys = tuple(tags)
    labels = {k: str(v) for k, v in tags.items()}
    if _LAST["connection"] != _connection():
        _LAST.update(connection=_connection(), series={})
    for name, value in values.items():
        if value is not None:
            gauge = _gauge(name, catalogue[name], tag_keys)
            gauge.set(float(value), tags=labels)
            _LAST["series"][name, tuple(labels.items())] = (gauge, float(value), labels)
    if not _REFRESHER:
        _REFRESHER.append(threading.Thread(target=_refresh, name="sparana-metrics", daemon=True))
        _REFRESHER[0].start()


def _connection():
    """This process's Ray connection (a driver that reconnects gets a new worker id)."""
    return ray.get_runtime_context().get_worker_id()


def _refresh():
    while True:
        time.sleep(REFRESH_SECONDS)
        try:
            if ray.is_initialized() and _LAST["connection"] == _connection():
                for gauge, value, labels in list(_LAST["series"].values()):
                    gauge.set(value, tags=labels)
        except Exception:  # Ray shutting down under this thread: try again at the next tick
            continue


def record_worker(experiment, role, shard, loss, accuracy, samples_per_second, gpu_bytes=None):
    record({"sparana_worker_loss": loss, "sparana_worker_accuracy": accuracy,
            "sparana_worker_samples_per_second": samples_per_second,
            # a worker on the CPU holds no GPU memory: 0, so that its chart has a line for every worker
            "sparana_worker_gpu_memory_bytes": gpu_bytes or 0},
           {"experiment": experiment, "role": role, "shard": shard}, WORKER_METRICS)


def record_driver(experiment, round_index, accuracy, sparsity=None, stage=None):
    record({"sparana_round": round_index, "sparana_master_accuracy": accuracy, "sparana_sparsity": sparsity},
           {"experiment": experiment, "stage": stage or experiment}, DRIVER_METRICS)
