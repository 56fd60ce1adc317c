"""Sparana's Grafana dashboard, provisioned next to the dashboards Ray writes into its session folder.

When its dashboard starts, a Ray head writes into ``<session>/metrics/``:

- ``prometheus/prometheus.yml``: a Prometheus configuration whose only scrape
  job reads ``<session>/prom_metrics_service_discovery.json``, the file in
  which Ray lists the metrics endpoint of every node;
- ``grafana/grafana.ini`` and ``grafana/provisioning/``: Grafana's
  configuration (embedding allowed, anonymous viewers), a Prometheus data
  source (``$RAY_PROMETHEUS_HOST``, default http://localhost:9090) and a
  dashboard provider for the folder ``grafana/dashboards/``, where Ray puts its
  own dashboards (Ray re-creates ``grafana/`` whenever its dashboard starts).

:func:`add_grafana_dashboard` copies ``grafana/sparana.json`` (beside this
module) into that folder, so that a Grafana started with Ray's configuration
shows Sparana's charts in its "Ray" folder. :func:`init` calls it, in the
background, whenever the session's folder is on this machine (an embedded
Ray, a head started here, or a driver running on the head node).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import yaml

DASHBOARD = Path(__file__).with_name("grafana") / "sparana.json"
FILE_NAME = "sparana_grafana_dashboard.json"
WAIT_SECONDS = 60.0  # how long the background copy waits for Ray's dashboard to write its configuration


def session_dir():
    """The folder of the Ray session this process is connected to (a path on the head node), or None."""
    import ray

    if not ray.is_initialized():
        return None
    node = getattr(ray._private.worker, "_global_node", None)  # no public API tells it
    path = node.get_session_dir_path() if node is not None else None
    return Path(path) if path else None


def metrics_dir(session=None):
    """``<session>/metrics`` (or ``$RAY_METRICS_OUTPUT_ROOT``, where Ray writes them when it is set)."""
    if os.environ.get("RAY_METRICS_OUTPUT_ROOT"):
        return Path(os.environ["RAY_METRICS_OUTPUT_ROOT"])
    session = Path(session) if session is not None else session_dir()
    return None if session is None else session / "metrics"


def dashboards_dir(session=None):
    """The folder Ray's Grafana provisioning reads dashboards from, or None while Ray has not written it.

    Read from Ray's provisioning file rather than assumed, since the head may
    have been told another folder (``RAY_METRICS_GRAFANA_DASHBOARD_OUTPUT_DIR``).
    """
    metrics = metrics_dir(session)
    provisioning = None if metrics is None else metrics / "grafana" / "provisioning" / "dashboards" / "default.yml"
    if provisioning is None or not provisioning.is_file():
        return None
    providers = (yaml.safe_load(provisioning.read_text()) or {}).get("providers") or []
    for provider in providers:
        path = (provider.get("options") or {}).get("path")
        if path:
            return Path(path)
    return None


def add_grafana_dashboard(session=None, timeout=0.0):
    """Copy Sparana's dashboard into the Ray session's Grafana dashboards folder; return its new path.

    ``session``: a Ray session folder (default: the one this process is
    connected to). Waits up to ``timeout`` seconds for Ray's dashboard to
    write its Grafana configuration. Raises FileNotFoundError when there is
    none on this machine (a cluster whose head is elsewhere: copy
    ``sparana/cluster/grafana/sparana.json`` to the head, see the README).
    """
    deadline = time.monotonic() + timeout
    while (folder := dashboards_dir(session)) is None or not folder.is_dir():
        if time.monotonic() >= deadline:
            where = metrics_dir(session)
            raise FileNotFoundError(f"no Grafana configuration of a Ray session on this machine (looked in "
                                    f"{where if where is not None else 'the session of a connected Ray'}/grafana); "
                                    f"start Ray (cluster.init) first, or copy {DASHBOARD} to the head node")
        time.sleep(0.5)
    target = folder / FILE_NAME
    temporary = target.with_suffix(".tmp")  # Grafana polls the folder: it must never see half a file
    shutil.copyfile(DASHBOARD, temporary)
    os.replace(temporary, target)
    return target


def add_grafana_dashboard_in_background(timeout=WAIT_SECONDS):
    """Start a daemon thread that adds Sparana's dashboard once Ray has written its configuration.

    Ray's dashboard may still be starting when ``ray.init`` returns, and it
    clears its Grafana folder when it does; the thread waits for Ray's files
    so that the copy is not cleared. A session folder that is not on this
    machine, or not writable, is left alone.
    """
    session = session_dir()
    if session is None or not session.is_dir():
        return None

    def copy():
        try:
            add_grafana_dashboard(session, timeout)
        except OSError:
            pass  # no Grafana configuration here (or not ours to write): nothing to provision

    thread = threading.Thread(target=copy, name="sparana-grafana-dashboard", daemon=True)
    thread.start()
    return thread
