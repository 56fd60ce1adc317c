"""ray_cluster.yaml against the Ray cluster launcher's own schema, and what it must not open."""

import copy
import re
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray")
from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "ray_cluster.yaml"


@pytest.fixture
def config():
    return yaml.safe_load(CONFIG.read_text())


def test_the_launcher_accepts_it(config):
    validate_config(prepare_config(copy.deepcopy(config)))


def test_a_broken_copy_is_refused(config):
    del config["available_node_types"]["head"]["node_config"]
    config["max_workers"] = "four"
    with pytest.raises(Exception):
        validate_config(prepare_config(config))


def test_cpu_head_and_gpu_workers(config):
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["max_workers"] == 0
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert workers and all(t["resources"].get("GPU", 0) >= 1 and t["max_workers"] >= 1 for t in workers)


def test_setup_installs_sparana_with_gpu_and_fetches_mnist(config):
    setup = " ".join(config["setup_commands"])
    assert re.search(r"pip install .*sparana\[gpu\]", setup)
    assert "load_mnist()" in setup


def test_dashboard_stays_on_localhost_and_token_authentication_is_on(config):
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in CONFIG.read_text()
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in command:
            assert "RAY_AUTH_MODE=token ray start" in command
    assert "disabled" not in CONFIG.read_text().replace("# ", "")
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"  # one token on every node
    text = yaml.safe_dump(config)
    assert "IpPermissions" not in text and "8265" not in text.replace("127.0.0.1:8265", "")
