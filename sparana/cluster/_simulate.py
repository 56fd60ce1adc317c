"""Several Ray nodes on this machine, for tests and benchmarks of placement and node loss.

``ray.cluster_utils.Cluster`` starts a head and nodes as processes of this
machine; a node may declare GPUs the machine does not have (``num_gpus=2``),
and Ray schedules, isolates (``CUDA_VISIBLE_DEVICES``) and restarts actors on
them exactly as on a GPU cluster. Every node listens on 127.0.0.1, with token
authentication on (the token Ray finds, see :func:`ensure_token`).
"""

from __future__ import annotations

import os
import socket
import tempfile

from ._init import _loopback_only, _use_token, ensure_token


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SimulatedCluster:
    """A head (``head_cpus`` CPUs, no GPU) to which :meth:`add_node` adds nodes of any resources."""

    def __init__(self, head_cpus=1, temp_dir=None):
        from ray.cluster_utils import Cluster

        ensure_token()
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        _use_token()  # this process talks to the nodes it starts with the token
        self.temp_dir = temp_dir or tempfile.mkdtemp(prefix="ray-")
        with _loopback_only():
            self.cluster = Cluster(initialize_head=True, head_node_args={
                "num_cpus": head_cpus, "include_dashboard": False, "temp_dir": str(self.temp_dir),
                "dashboard_agent_listen_port": _free_port()})  # not Ray's fixed default port
        self.address = self.cluster.address

    def add_node(self, **resources):
        """Start a node (``num_cpus=..., num_gpus=...``) and wait for it to join; return it."""
        with _loopback_only():
            return self.cluster.add_node(**resources)

    def remove_node(self, node):
        """Kill every process of ``node`` at once, as when a machine is lost."""
        self.cluster.remove_node(node, allow_graceful=False)

    def node_of(self, node_id):
        """The node started by :meth:`add_node` whose Ray node id is ``node_id``."""
        return next(node for node in self.cluster.worker_nodes if node.node_id == node_id)

    def shutdown(self):
        self.cluster.shutdown()
