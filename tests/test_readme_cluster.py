"""The README's local-cluster lines, run verbatim in an empty home folder: secure by default."""

import os
import re
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("ray")
from ray_support import is_loopback, listening_sockets  # noqa: E402

from sparana.data import cache_root  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]
ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = "http://127.0.0.1:8265"


def readme_cluster_lines():
    """The shell block that follows the README's "A local cluster" paragraph."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"A local cluster[^\n]*\n(?:[^\n]+\n)*?\n```sh\n(.*?)```", text, re.S)
    assert match, "the README's local-cluster block was not found"
    return match.group(1)


def ray_processes():
    """Pids of the GCS servers and raylets running on this machine."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and Path(f"/proc/{entry}/comm").read_text().strip() in ("gcs_server", "raylet"):
                found.append(int(entry))
        except OSError:
            continue
    return found


def status(url, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def test_the_readme_cluster_is_secure_on_a_bare_machine(tmp_path):
    lines = readme_cluster_lines()
    assert "ray start --head" in lines and "ray job submit" in lines and "ray stop" in lines
    if ray_processes() or status(DASHBOARD) is not None:
        pytest.skip("another Ray cluster runs on this machine; the README's `ray stop` would stop it too")
    if not (ROOT / ".venv" / "bin" / "activate").exists():
        pytest.skip("the README's lines activate .venv, which `make test` creates")
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env.update(HOME=str(home), SPARANA_DATA=str(cache_root()))  # the data cache is not Ray's state
    log = (tmp_path / "log").open("w")
    shell = subprocess.Popen(["bash", "-e", "-c", lines], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    seen = {}
    try:
        deadline = time.monotonic() + 600
        while shell.poll() is None and time.monotonic() < deadline:
            if "without" not in seen and status(f"{DASHBOARD}/api/jobs/") is not None:
                token = (home / ".ray" / "auth_token").read_text().strip()
                seen["without"] = status(f"{DASHBOARD}/api/jobs/")
                seen["with"] = status(f"{DASHBOARD}/api/jobs/", token)
                seen["mode"] = stat.S_IMODE((home / ".ray" / "auth_token").stat().st_mode)
                seen["sockets"] = listening_sockets(ray_processes())
            time.sleep(1)
        returncode = shell.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if shell.poll() is None:
            shell.kill()
            subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], env=env, timeout=120)
        log.close()
    output = (tmp_path / "log").read_text()
    assert returncode == 0, output[-4000:]
    assert seen.get("without") == 401 and seen.get("with") == 200, (seen, output[-2000:])
    assert seen["mode"] == 0o600
    assert seen["sockets"] and all(is_loopback(address) for address, _ in seen["sockets"]), seen["sockets"]
    assert "Token authentication is disabled" not in output
    assert re.search(r"Job 'raysubmit_\w+' succeeded", output), output[-3000:]
    assert "final test accuracy" in output
    assert not ray_processes()  # `ray stop` stopped it
