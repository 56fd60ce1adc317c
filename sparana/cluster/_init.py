"""Starting or joining Ray.

``init()`` joins the cluster named by ``address`` or ``RAY_ADDRESS`` (``"auto"``
for the cluster this node belongs to), or else starts an embedded single-node
Ray on this machine with its dashboard on 127.0.0.1. If the program already
called ``ray.init``, that connection is used as it is.

Ray 2.54 removed ``ray.init(local_mode=True)``; ``init(local_mode=True)`` is
Sparana's replacement: a real single-node Ray on this machine whose workers all
run on the CPU with the NumPy backend, whatever GPUs the machine has.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import ray

LOCALHOST = "127.0.0.1"
CONNECT_TIMEOUT = 3.0


class ClusterError(RuntimeError):
    """The cluster cannot be reached, or cannot place what was asked for."""


@dataclass
class ClusterInfo:
    """What :func:`init` connected to."""

    address: str
    dashboard_url: str | None
    local_mode: bool
    started_here: bool
    resources: dict

    @property
    def num_cpus(self):
        return int(self.resources.get("CPU", 0))

    @property
    def num_gpus(self):
        return 0 if self.local_mode else int(self.resources.get("GPU", 0))


_STATE = {"local_mode": False, "started_here": False, "dashboard_url": None}


def init(address=None, local_mode=False, num_cpus=None, num_gpus=None, dashboard_port=None,
         namespace="sparana", **ray_options):
    """Join or start Ray and return a :class:`ClusterInfo`.

    ``address``: a cluster address ("host:port", "ray://host:port" or "auto");
    the dashboard (and the job API it serves) of an embedded Ray listens on
    127.0.0.1 only, and Ray's token authentication stays on;
    default ``$RAY_ADDRESS``; with neither, an embedded Ray is started here
    (``num_cpus``/``num_gpus`` default to the machine's). ``local_mode``: every
    Sparana worker runs on the CPU with NumPy. A cluster address that does not
    answer raises :class:`ClusterError` within seconds.
    """
    _STATE["local_mode"] = bool(local_mode)
    if ray.is_initialized():
        return _info()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        _check_reachable(address)
        _use_token()
        try:
            context = ray.init(address=address, namespace=namespace, **ray_options)
        except ConnectionError as exc:
            raise ClusterError(f"could not join the Ray cluster at {address!r}: {exc}") from exc
        _STATE["dashboard_url"] = context.dashboard_url
    else:
        options = dict(num_cpus=num_cpus, num_gpus=0 if local_mode else num_gpus, include_dashboard=True,
                       dashboard_host=LOCALHOST, namespace=namespace)
        if dashboard_port is not None:
            options["dashboard_port"] = dashboard_port
        options.update(ray_options)
        context = ray.init(**options)
        _STATE["started_here"] = True
        _STATE["dashboard_url"] = context.dashboard_url
    return _info()


def _use_token():
    """Send the cluster's authentication token when one is available here.

    Ray writes the token of a cluster started on this machine to
    ~/.ray/auth_token; a client sends it only with RAY_AUTH_MODE=token (or
    RAY_AUTH_TOKEN set). Sparana turns that on for its own connection; it
    never turns authentication off.
    """
    token_file = os.path.expanduser("~/.ray/auth_token")
    if "RAY_AUTH_MODE" in os.environ or not ("RAY_AUTH_TOKEN" in os.environ or os.path.exists(token_file)):
        return
    try:  # Ray caches its configuration when imported: refresh it the way Ray itself does
        from ray._private.authentication.authentication_token_setup import _enable_token_auth
    except ImportError:
        os.environ["RAY_AUTH_MODE"] = "token"
    else:
        _enable_token_auth()


def _check_reachable(address):
    """Fail fast (seconds, not minutes) when nothing listens at a host:port address."""
    if address == "auto" or address.startswith("local"):
        return
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"a Ray address of the form host:port (or 'auto') expected, got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        raise ClusterError(f"no Ray cluster answers at {address!r} ({exc.__class__.__name__}: {exc}); "
                           f"start one with `ray start --head` or check RAY_ADDRESS") from exc


def _info():
    url = _STATE.get("dashboard_url")
    return ClusterInfo(address=ray.get_runtime_context().gcs_address,
                       dashboard_url=url if not url or "://" in url else f"http://{url}",
                       local_mode=_STATE["local_mode"], started_here=_STATE["started_here"],
                       resources=ray.cluster_resources())


def is_local_mode():
    """True when :func:`init` was asked for local mode (every worker on the CPU)."""
    return _STATE["local_mode"]


def shutdown():
    """Disconnect from Ray (and stop the embedded Ray if :func:`init` started it)."""
    ray.shutdown()
    _STATE.update(local_mode=False, started_here=False, dashboard_url=None)
