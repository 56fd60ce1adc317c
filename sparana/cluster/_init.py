"""Starting or joining Ray.

``init()`` joins the cluster named by ``address`` or ``RAY_ADDRESS`` (``"auto"``
for the cluster this node belongs to), or else starts an embedded single-node
Ray on this machine with its dashboard on 127.0.0.1. If the program already
called ``ray.init``, that connection is used as it is.

Ray 2.54 removed ``ray.init(local_mode=True)``; ``init(local_mode=True)`` is
Sparana's replacement: a real single-node Ray on this machine whose workers all
run on the CPU with the NumPy backend, whatever GPUs the machine has.

Security: Sparana never turns Ray's token authentication off. An embedded Ray
gets a token (generated, readable by its owner only, when none exists) and
keeps every one of its ports on 127.0.0.1: the dashboard and job API, and also
the GCS, raylet and workers, which Ray otherwise opens on every interface.
Joining a cluster sends the token when one is available here.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

import ray

from ._grafana import add_grafana_dashboard_in_background

LOCALHOST = "127.0.0.1"
CONNECT_TIMEOUT = 3.0
# Ray's switch for a machine that is not part of a multi-machine cluster: every node address,
# and so every port Ray opens, on the loopback interface.
LOOPBACK_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


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
        joining = _loopback_only() if _is_loopback_address(address) else contextlib.nullcontext()
        try:
            with joining:  # a cluster on 127.0.0.1 is found there, not at this machine's network address
                context = ray.init(address=address, namespace=namespace, **ray_options)
        except ConnectionError as exc:
            raise ClusterError(f"could not join the Ray cluster at {address!r}: {exc}") from exc
        _STATE["dashboard_url"] = context.dashboard_url
    else:
        # address "local": a new Ray of our own, even where a `ray start` cluster runs on this machine
        # (ray.init() would join that one, and refuse num_cpus)
        options = dict(address="local", num_cpus=num_cpus, num_gpus=0 if local_mode else num_gpus,
                       include_dashboard=True, dashboard_host=LOCALHOST, namespace=namespace)
        if dashboard_port is not None:
            options["dashboard_port"] = dashboard_port
        options.update(ray_options)
        ensure_token()
        with _loopback_only():
            context = ray.init(**options)
        _STATE["started_here"] = True
        _STATE["dashboard_url"] = context.dashboard_url
    add_grafana_dashboard_in_background()  # Sparana's charts for a Grafana on Ray's configuration (if the head is here)
    return _info()


def token_path():
    """The file Ray reads its authentication token from: ``$RAY_AUTH_TOKEN_PATH`` or ~/.ray/auth_token."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def token_available():
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or token_path().is_file()


def ensure_token():
    """Create Ray's token file (readable by its owner only) when no token is available; return its path.

    Ray would generate one itself, readable by everyone on the machine.
    """
    path = token_path()
    if token_available():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):  # another process made it meanwhile: use theirs
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path


def _use_token():
    """Send the cluster's authentication token when one is available here.

    A client sends Ray's token only with RAY_AUTH_MODE=token (or a token
    found); Sparana turns that on for its own connection when a token exists,
    and leaves an explicit RAY_AUTH_MODE as the user set it. It never turns
    authentication off.
    """
    mode = os.environ.get("RAY_AUTH_MODE")
    if (mode or "token").lower() != "token" or not token_available():
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    try:  # Ray caches its configuration and token: refresh them the way Ray itself does
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:
        return
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextlib.contextmanager
def _loopback_only():
    """Start Ray with 127.0.0.1 as this node's address, so that it listens on the loopback only.

    Ray reads the switch from the environment when imported (this process)
    and when its processes start (they inherit it); both are set while the
    embedded Ray starts, and restored afterwards.
    """
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(LOOPBACK_VARIABLE)
    os.environ[LOOPBACK_VARIABLE] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved[0]
        if saved[1] is None:
            os.environ.pop(LOOPBACK_VARIABLE, None)
        else:
            os.environ[LOOPBACK_VARIABLE] = saved[1]


def _is_loopback_address(address):
    host = address.split("://", 1)[-1].rpartition(":")[0]
    return host in ("localhost", "::1", "[::1]") or host.startswith("127.")


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
