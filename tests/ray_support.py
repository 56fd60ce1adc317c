"""Real Ray clusters for the tests, owning all their state.

Every Ray process the tests start reads its token from a file in a fresh
temporary folder (``RAY_AUTH_TOKEN_PATH``), keeps its sessions and sockets in
another (``--temp-dir``) and listens on 127.0.0.1 only; nothing reads or
writes the user's ``~/.ray``, and a head is stopped by stopping its own
``ray start --block`` process, never with ``ray stop`` (which would stop every
Ray cluster of the machine, the user's too).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

RAY = Path(sys.executable).parent / "ray"
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # Ray's switch: node address 127.0.0.1


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayEnvironment:
    """A token in a temporary folder and the variables that make Ray use it (and stay on loopback)."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="sparana-ray-"))  # short: Ray's socket paths
        self.token_file = self.folder / "auth_token"
        descriptor = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
        self.variables = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_file),
                          "RAY_USAGE_STATS_ENABLED": "0", **LOOPBACK}
        self._saved = {}

    @property
    def token(self):
        return self.token_file.read_text().strip()

    def env(self, **extra):
        """The environment for a subprocess: this one's, with Ray's variables and a scratch HOME."""
        from sparana.data import cache_root

        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # the venv's python
        return dict(os.environ, **self.variables, HOME=str(self.folder / "home"), PATH=path,
                    SPARANA_DATA=str(cache_root()), **extra)

    def enter(self):
        """Set the variables in this process (the driver the tests run in); ``exit`` restores them."""
        (self.folder / "home").mkdir(exist_ok=True)
        self._saved = {name: os.environ.get(name) for name in self.variables}
        os.environ.update(self.variables)
        _refresh_ray_configuration()
        return self

    def exit(self):
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _refresh_ray_configuration()
        shutil.rmtree(self.folder, ignore_errors=True)


def _refresh_ray_configuration():
    """Make this process's Ray (if imported) read the authentication variables again: it caches them."""
    if "ray" in sys.modules:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()


class Head:
    """A Ray head started with ``ray start --head --block`` on loopback ports, stopped with its process."""

    def __init__(self, environment, num_cpus=2, resources_args=()):
        self.environment = environment
        self.port, self.dashboard_port, self.metrics_port = free_port(), free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir=environment.folder))
        self.num_cpus = num_cpus
        self.extra_args = list(resources_args)
        self.process = None

    @property
    def env(self):
        return self.environment.env()

    def token(self):
        return self.environment.token

    def start(self, timeout=180):
        command = [str(RAY), "start", "--head", "--block", f"--port={self.port}", "--dashboard-host=127.0.0.1",
                   f"--dashboard-port={self.dashboard_port}", f"--metrics-export-port={self.metrics_port}",
                   f"--num-cpus={self.num_cpus}", f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
                   # Ray's fixed default ports, taken by any other cluster of the machine
                   f"--dashboard-agent-listen-port={free_port()}", f"--ray-client-server-port={free_port()}",
                   *self.extra_args]
        self.log = open(self.temp_dir / "ray-start.log", "w")
        self.process = subprocess.Popen(command, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self._dashboard_answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"ray start failed:\n{(self.temp_dir / 'ray-start.log').read_text()[-3000:]}")
            time.sleep(0.5)
        return self

    def _dashboard_answers(self):
        request = urllib.request.Request(f"{self.dashboard}/api/version",
                                         headers={"Authorization": f"Bearer {self.token()}"})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def submit(self, entrypoint, cwd, timeout=300):
        """``ray job submit --no-wait`` of ``entrypoint`` (a list) from ``cwd``; return the job id.

        A head that has just started may answer "No available agent" until its job agent has
        registered: that answer is retried for a minute.
        """
        command = [str(RAY), "job", "submit", "--address", self.dashboard, "--working-dir", str(cwd), "--no-wait",
                   "--", *entrypoint]
        deadline = time.monotonic() + 60
        while True:
            done = subprocess.run(command, capture_output=True, text=True, env=self.env, timeout=timeout, cwd=cwd)
            if done.returncode == 0 or "No available agent" not in done.stderr or time.monotonic() > deadline:
                break
            time.sleep(2)
        if done.returncode != 0:
            raise RuntimeError(f"ray job submit failed:\n{done.stderr[-3000:]}")
        return re.search(r"raysubmit_[A-Za-z0-9]+", done.stdout).group(0)

    def stop(self, timeout=60):
        """Stop the head's ``ray start --block`` (it stops the processes it started), then its group."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.process = None
        self.log.close()


def listening_sockets(pids):
    """(address, port) of every TCP socket in LISTEN state owned by one of ``pids`` (Linux /proc)."""
    inodes = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            continue
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                address, port = local.split(":")
                found.append((_address(address, width), int(port, 16)))
    return found


def _address(hex_address, width):
    raw = bytes.fromhex(hex_address)
    if width == 8:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def is_loopback(address):
    return address in ("127.0.0.1", "::1", "::ffff:127.0.0.1") or address.startswith("127.")


def descendants(pid):
    """``pid`` and every process below it (Linux /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(children.get(current, []))
    return found

