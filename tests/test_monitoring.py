"""Sparana's Grafana dashboard: its JSON holds what Grafana needs, and a real Prometheus, scraping a real Ray
through Ray's own configuration and service discovery, answers every query of every panel with the series of
the experiment's workers and driver.

Grafana itself is not installed here: the dashboard is checked field by field, never rendered.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

import sparana as sa
from ray_support import Head, free_port
from sparana import cluster
from sparana.cluster import _grafana
from sparana.cluster._metrics import DRIVER_METRICS, WORKER_METRICS
from sparana.data import MnistData

PROMETHEUS = shutil.which("prometheus")
EXPERIMENT, STAGE, ROLE = "pytest_prometheus", "pytest prometheus stage", "trainer"
WORKER_LABELS = {"experiment", "role", "shard"}
DRIVER_PANELS = ("Round", "Master test accuracy", "Sparsity")  # one series per stage; the others, one per worker


def dashboard():
    return json.loads(_grafana.DASHBOARD.read_text())


def chart_panels(board):
    return [panel for panel in board["panels"] if panel["type"] != "row"]


def variables(board):
    return {variable["name"]: variable for variable in board["templating"]["list"]}


# ------------------------------------------------------------- the JSON alone
def test_the_dashboard_has_the_fields_grafana_needs():
    board = dashboard()
    assert isinstance(board["uid"], str) and 0 < len(board["uid"]) <= 40  # Grafana's limit on a uid
    assert board["title"] and isinstance(board["schemaVersion"], int) and isinstance(board["version"], int)
    assert board["time"] == {"from": "now-1h", "to": "now"} and "id" not in board  # provisioning assigns the id
    ids = [panel["id"] for panel in board["panels"]]
    assert len(set(ids)) == len(ids) and all(isinstance(i, int) for i in ids)
    cells = set()
    for panel in board["panels"]:
        assert panel["type"] in {"timeseries", "row"} and panel["title"]
        box = panel["gridPos"]
        assert all(isinstance(box[k], int) for k in "hwxy") and box["x"] + box["w"] <= 24 and box["h"] > 0
        covered = {(x, y) for x in range(box["x"], box["x"] + box["w"]) for y in range(box["y"], box["y"] + box["h"])}
        assert not covered & cells, f"panel {panel['title']!r} overlaps another"
        cells |= covered
    defined = variables(board)
    assert defined["datasource"]["type"] == "datasource" and defined["datasource"]["query"] == "prometheus"
    for panel in chart_panels(board):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["description"] and panel["fieldConfig"]["defaults"]["unit"]
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(set(refs)) == len(refs)
        for target in panel["targets"]:
            assert target["expr"] and target["datasource"] == panel["datasource"]
            used = set(re.findall(r"\$(\w+)", target["expr"] + target.get("legendFormat", "")))
            assert used <= set(defined), f"{panel['title']!r} uses undefined variables {used - set(defined)}"
    for name in ("experiment", "role"):
        variable = defined[name]
        assert variable["type"] == "query" and variable["query"]["query"] == variable["definition"]
        assert variable["includeAll"] and variable["allValue"] == ".+" and variable["datasource"]["uid"] == "${datasource}"


def test_every_metric_sparana_exports_has_a_panel():
    queries = " ".join(target["expr"] for panel in chart_panels(dashboard()) for target in panel["targets"])
    for name in (*WORKER_METRICS, *DRIVER_METRICS):
        assert re.search(rf"\bray_{name}\{{", queries), f"no panel shows ray_{name}"


def test_the_dashboard_is_package_data():
    from importlib.resources import files

    assert json.loads(files("sparana.cluster").joinpath("grafana", "sparana.json").read_text()) == dashboard()
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"sparana.cluster" = ["grafana/*.json"]' in pyproject  # a wheel holds it too


# ------------------------------------------------------------ a real Prometheus
def on_ray(test):
    """A test with a real Ray and Prometheus: marked, and given time."""
    return pytest.mark.ray(pytest.mark.slow(pytest.mark.timeout(600)(test)))


def promql(expr, experiment=EXPERIMENT, role=ROLE):
    """A panel's query as Grafana sends it with one experiment and one role selected."""
    return expr.replace("$experiment", experiment).replace("$role", role)


class Prometheus:
    """A Prometheus on 127.0.0.1 with its own storage folder, started and stopped by the test."""

    def __init__(self, config, folder):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(folder / "prometheus.log", "w")
        self.process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.log_path = folder / "prometheus.log"
        deadline = time.monotonic() + 60
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Prometheus did not start:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.5)

    def _ready(self):
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def api(self, path, **query):
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr):
        return self.api("query", query=expr)["result"]

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def service_discovery(session):
    """The metrics endpoints that Ray's service-discovery file lists."""
    listed = json.loads((session / "prom_metrics_service_discovery.json").read_text())
    return {target for group in listed for target in group["targets"]}


def wait_for_the_node_in_service_discovery(session, head, timeout=90):
    """Ray rewrites the file every 5 s and lists a node once it has registered.

    Prometheus re-reads the file when it changes; waiting until the node is
    listed before Prometheus starts spares the test the case where a change
    is missed and Prometheus re-reads it only after its refresh interval (5 min).
    """
    deadline = time.monotonic() + timeout
    while not ((session / "prom_metrics_service_discovery.json").is_file()
               and f"127.0.0.1:{head.metrics_port}" in service_discovery(session)):
        assert time.monotonic() < deadline, "Ray's service discovery never listed the head node"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def head(ray_environment):
    """A Ray head started here, this process its driver; yields the head and its session folder."""
    head = Head(ray_environment).start()
    try:
        cluster.init(address=head.address)
        yield head, (head.temp_dir / "session_latest").resolve()
    finally:
        cluster.shutdown()
        head.stop()


@pytest.fixture(scope="module")
def prometheus(head, ray_environment):
    """A Prometheus on the configuration Ray generated; yields it and that configuration."""
    if PROMETHEUS is None:
        if os.environ.get("CI") and os.geteuid() == 0 and shutil.which("apt-get"):
            pytest.fail("prometheus is missing although .ci/run installs it here (root, apt-get): see its warning")
        pytest.skip("needs Prometheus: `apt-get install prometheus` (Debian, Ubuntu; .ci/run does it as root), "
                    "or a prometheus binary from prometheus.io on PATH")
    head, session = head
    wait_for_the_node_in_service_discovery(session, head)
    ray_config = yaml.safe_load((session / "metrics" / "prometheus" / "prometheus.yml").read_text())
    # Ray's configuration as it is, but scraped every second rather than every 10 s (a short test)
    ray_config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    folder = Path(tempfile.mkdtemp(prefix="prometheus-", dir=ray_environment.folder))
    (folder / "prometheus.yml").write_text(yaml.safe_dump(ray_config))
    server = Prometheus(folder / "prometheus.yml", folder)
    try:
        yield server, ray_config
    finally:
        server.stop()


@pytest.fixture(scope="module")
def experiment(head):
    """A short pruning experiment on two Ray workers, which stay alive while Prometheus is asked."""
    mnist = sa.load_mnist()
    small = MnistData(mnist.train.slice(0, 1000), mnist.test.slice(0, 300))
    workers = cluster.ray_workers(2, seed=0, data=small, experiment=EXPERIMENT, role=ROLE)
    try:
        model = sa.Model(784, [sa.DenseReluLayer(32), sa.DenseLinearLayer(10)], comp_type="CPU", seed=0)
        model.initialize_weights("Xavier", bias_constant=0.1)
        result = cluster.train_and_mix(model, workers, rounds=2, local_steps=2, prune=cluster.Pruning({1: 0.5}),
                                       test=small.test, progress=False, name=STAGE, settings={"batch_size": 32})
        yield SimpleNamespace(result=result, finished=time.monotonic())
    finally:
        workers.shutdown()


@on_ray
def test_prometheus_finds_every_node_through_rays_service_discovery(head, prometheus):
    (head, session), (prometheus, ray_config) = head, prometheus
    (job,) = ray_config["scrape_configs"]
    assert job["file_sd_configs"] == [{"files": [str(session / "prom_metrics_service_discovery.json")]}]
    node = f"127.0.0.1:{head.metrics_port}"  # the head node's metrics, on the loopback
    deadline = time.monotonic() + 90
    while True:
        up = {t["labels"]["instance"] for t in prometheus.api("targets")["activeTargets"] if t["health"] == "up"}
        if node in service_discovery(session) and node in up:
            break
        assert time.monotonic() < deadline, (service_discovery(session), up)
        time.sleep(1)


def complete(answers, rounds):
    """Every panel has its series (one per worker, or one for the stage), and the last round is in."""
    for title, results in answers.items():
        if any(len(series) != (1 if title in DRIVER_PANELS else 2) for series in results):
            return False
    return float(answers["Round"][0][0]["value"][1]) == rounds - 1


@on_ray
def test_every_panel_of_the_dashboard_shows_the_experiment(prometheus, experiment):
    prometheus = prometheus[0]
    panels = chart_panels(dashboard())
    deadline, answers, seen = time.monotonic() + 120, {}, set()
    while True:  # Ray's agents export every few seconds; Prometheus scrapes every second
        answers = {panel["title"]: [prometheus.query(promql(target["expr"])) for target in panel["targets"]]
                   for panel in panels}
        seen |= {title for title, results in answers.items() if all(results)}
        if complete(answers, len(experiment.result.rounds)):
            break
        missing = sorted(set(answers) - seen)
        assert time.monotonic() < deadline, f"panels whose query never returned a series: {missing}" if missing \
            else f"the figures of both workers and of the last round never all reached Prometheus: {answers}"
        time.sleep(2)
    for panel in panels:
        for target, series in zip(panel["targets"], answers[panel["title"]]):
            print(f"{panel['title']}: {promql(target['expr'])} -> {[(s['metric'], s['value'][1]) for s in series]}")
            labels = [s["metric"] for s in series]
            assert all(label["experiment"] == EXPERIMENT for label in labels), (panel["title"], labels)
            if panel["title"] not in DRIVER_PANELS:  # a worker panel: one series per worker
                assert all(set(label) == WORKER_LABELS and label["role"] == ROLE for label in labels), labels
                assert sorted(label["shard"] for label in labels) == ["0", "1"], (panel["title"], labels)
            else:  # a driver panel: one series for the stage
                assert labels == [{"experiment": EXPERIMENT, "stage": STAGE}], (panel["title"], labels)
    last = {title: float(answers[title][0][0]["value"][1]) for title in DRIVER_PANELS}
    assert last["Round"] == 1 and last["Sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert last["Master test accuracy"] == pytest.approx(experiment.result.accuracy, rel=1e-6)


@on_ray
def test_the_dashboards_variables_offer_the_experiment_and_its_role(prometheus, experiment):
    prometheus = prometheus[0]
    defined = variables(dashboard())
    for name, wanted in (("experiment", EXPERIMENT), ("role", ROLE)):
        # label_values(selector, label): what Grafana asks Prometheus's label-values API
        selector, label = re.fullmatch(r"label_values\((.+), (\w+)\)", defined[name]["query"]["query"]).groups()
        deadline = time.monotonic() + 60
        while wanted not in (values := prometheus.api(f"label/{label}/values", **{"match[]": promql(selector)})):
            assert time.monotonic() < deadline, (name, values)
            time.sleep(2)


@on_ray
def test_sparanas_dashboard_lands_next_to_rays(head):
    head, session = head
    folder = _grafana.dashboards_dir(session)
    assert folder.is_dir() and (folder / "default_grafana_dashboard.json").is_file()  # Ray's own
    deadline = time.monotonic() + 60
    while not (folder / _grafana.FILE_NAME).is_file():  # copied in the background by cluster.init
        assert time.monotonic() < deadline, sorted(p.name for p in folder.iterdir())
        time.sleep(0.5)
    placed = cluster.add_grafana_dashboard(timeout=30)
    assert placed == folder / _grafana.FILE_NAME and json.loads(placed.read_text()) == dashboard()
    assert placed.resolve().is_relative_to(head.temp_dir.resolve())
    provider = yaml.safe_load((session / "metrics/grafana/provisioning/dashboards/default.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == str(folder)  # the folder Grafana is told to read


@on_ray
def test_the_last_figures_stay_in_prometheus_between_rounds(prometheus, experiment):
    # Ray drops a gauge about 20 s after it was last set; Sparana sets its last values again every few
    # seconds, so that a chart keeps its lines through rounds longer than that.
    prometheus = prometheus[0]
    time.sleep(max(0.0, experiment.finished + 35 - time.monotonic()))
    for panel in chart_panels(dashboard()):
        assert prometheus.query(promql(panel["targets"][0]["expr"])), f"{panel['title']!r} lost its series"
