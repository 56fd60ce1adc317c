"""Ray metrics (``ray.util.metrics``): what workers and the driver export to the dashboard.

Workers export their loss, training accuracy, samples per second and (on a
GPU) device memory in use, tagged by experiment, role and shard; the driver
exports the round and the master model's test accuracy, tagged by
experiment. Ray's metrics agent serves them to Prometheus (names prefixed
``ray_``) and the dashboard's metrics pages. Outside Ray nothing is recorded.
"""

from __future__ import annotations

import ray

_GAUGES = {}

WORKER_METRICS = {
    "sparana_worker_loss": "Mean training loss of the worker's last round",
    "sparana_worker_accuracy": "Training accuracy of the worker's last round (its last minibatches)",
    "sparana_worker_samples_per_second": "Training samples per second of the worker's last round",
    "sparana_worker_gpu_memory_bytes": "GPU memory the worker's CuPy pool holds",
}
DRIVER_METRICS = {
    "sparana_round": "Last completed round of the experiment",
    "sparana_master_accuracy": "Test accuracy of the master model after the last round",
}


def _gauge(name, description, tags):
    if name not in _GAUGES:
        from ray.util.metrics import Gauge

        _GAUGES[name] = Gauge(name, description=description, tag_keys=tags)
    return _GAUGES[name]


def record(values, tags, catalogue):
    """Set the gauges of ``catalogue`` named in ``values`` (None values are skipped)."""
    if not ray.is_initialized():
        return
    tag_keys = tuple(tags)
    for name, value in values.items():
        if value is not None:
            _gauge(name, catalogue[name], tag_keys).set(float(value), tags={k: str(v) for k, v in tags.items()})


def record_worker(experiment, role, shard, loss, accuracy, samples_per_second, gpu_bytes=None):
    record({"sparana_worker_loss": loss, "sparana_worker_accuracy": accuracy,
            "sparana_worker_samples_per_second": samples_per_second,
            "sparana_worker_gpu_memory_bytes": gpu_bytes},
           {"experiment": experiment, "role": role, "shard": shard}, WORKER_METRICS)


def record_driver(experiment, round_index, accuracy):
    record({"sparana_round": round_index, "sparana_master_accuracy": accuracy}, {"experiment": experiment},
           DRIVER_METRICS)
