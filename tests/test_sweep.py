"""Sweeps on Ray Tune and `sparana run` on a real Ray head started by the tests (4 CPUs declared)."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from ray_support import Head  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]
SPARANA = Path(sys.executable).parent / "sparana"

ROOT = Path(__file__).resolve().parents[1]


def tiny(name, **changes):
    """The text of experiments/<name>, with tiny step counts (``changes`` override top-level keys)."""
    text = (ROOT / "experiments" / name).read_text()
    for key, value in changes.items():
        text, found = re.subn(rf"^{key}: .*$", f"{key}: {value}", text, flags=re.MULTILINE)
        assert found == 1, key
    return text


@pytest.fixture(scope="module")
def head(ray_environment):
    head = Head(ray_environment, num_cpus=4).start()
    try:
        yield head
    finally:
        head.stop()


def trial_rows(folder):
    """{trial folder name: [result.json rows]} of a sweep's results folder."""
    return {trial.name: [json.loads(line) for line in (trial / "result.json").read_text().splitlines() if line]
            for trial in folder.iterdir() if (trial / "result.json").is_file()}


def test_the_issue_sweep_runs_its_trials_side_by_side_through_ray_job_submit(head, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    # the issue's config (experiments/prune_sweep.yaml) with tiny step counts
    (tmp_path / "prune.yaml").write_text(tiny("prune_sweep.yaml", local_steps=2,
                                              train="{optimizer: adam, learning_rate: 0.001, batch_size: 32}"))
    results = tmp_path / "results"
    start = time.monotonic()
    job = head.submit(["sparana", "sweep", "prune.yaml", "--results", str(results)], cwd=tmp_path)
    client = JobSubmissionClient(head.dashboard, headers={"Authorization": f"Bearer {head.token()}"})
    while client.get_job_status(job) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.monotonic() - start < 500, "the sweep did not finish in time"
        time.sleep(2)
    logs = client.get_job_logs(job)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs[-4000:]
    print(f"sweep job: {time.monotonic() - start:.0f} s")
    folder = results / "prune-sweep"
    rows = trial_rows(folder)
    assert len(rows) == 8 and all([r["round"] for r in trial] == [0, 1, 2, 3] for trial in rows.values())
    # each trial's span: from its start (last report's time less its total time) to its last report;
    # Tune's timestamps are whole seconds, so two trials count as side by side when they share over 1 s
    spans = sorted((trial[-1]["timestamp"] - trial[-1]["time_total_s"], trial[-1]["timestamp"])
                   for trial in rows.values())
    overlapping = max(sum(1 for s, e in spans if min(e, end) - max(s, start) > 1.0) for start, end in spans)
    print(f"trials running at the same time, at most: {overlapping}")
    assert overlapping >= 2
    with open(folder / "summary.csv") as handle:
        summary = list(csv.DictReader(handle))
    assert len(summary) == 4 and all(row["trials"] == "2" for row in summary)
    assert {(row["sparsity"], row["mix"]) for row in summary} == {
        ("0.8", "average"), ("0.8", "importance"), ("0.9", "average"), ("0.9", "importance")}
    for row in summary:
        assert float(row["sparsity_mean"]) == pytest.approx(float(row["sparsity"]), abs=1e-3)
    assert "prune-sweep: final test accuracy over seeds" in logs
    assert (folder / "accuracy_vs_sparsity.png").stat().st_size > 10_000
    assert (folder / "accuracy_per_round.png").stat().st_size > 10_000
    assert list(folder.glob("*/checkpoint_*/rounds.safetensors")) and list(folder.glob("*/events.out.tfevents.*"))


RESUMABLE = """\
name: resumable
data: {path: mnist, train_rows: 2000, test_rows: 500}
model: {layers: [[relu, 256], [linear, 10]]}
experiment: train_and_mix
workers: 2
rounds: 8
local_steps: 40
sweep:
  grid: {mix: [average, importance]}
  seeds: [0, 1]
  resources: {cpus_per_worker: 0.5}
  max_concurrent: 1
"""


def test_a_stopped_sweep_resumes_without_rerunning_its_finished_trials(head, tmp_path):
    config = tmp_path / "resumable.yaml"
    config.write_text(RESUMABLE)
    results = tmp_path / "results"
    folder = results / "resumable"
    command = [str(SPARANA), "sweep", str(config), "--address", head.address, "--results", str(results)]
    log = open(tmp_path / "first.log", "w")
    process = subprocess.Popen(command, env=head.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    try:  # stop it (as `ray job stop` does) once two trials are done and a third is part of the way through
        while True:
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-3000:]
            rounds = [len(trial) for trial in trial_rows(folder).values()] if folder.exists() else []
            if rounds.count(8) >= 2 and any(3 <= n <= 6 for n in rounds):
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(120) == 1  # "2 of 4 trials did not finish ... --resume continues the sweep"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
    before = trial_rows(folder)
    finished = {name for name, rows in before.items() if len(rows) == 8}
    partial = {name: rows for name, rows in before.items() if 2 <= len(rows) < 8}
    assert len(finished) >= 2 and partial, {name: len(rows) for name, rows in before.items()}
    assert "trials did not finish" in (tmp_path / "first.log").read_text()

    done = subprocess.run(command + ["--resume"], env=head.env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    after = trial_rows(folder)
    assert len(after) == 4 and all(sorted({r["round"] for r in rows}) == list(range(8)) for rows in after.values())
    rerun = {name for name in after if len(after[name]) != len(before.get(name, []))}
    print(f"finished before the stop: {len(finished)}; run again after --resume: {len(rerun)}")
    assert not rerun & finished and after.keys() - finished == rerun  # only the unfinished trials ran again
    for name, rows in partial.items():  # ... and a trial stopped mid-way continued from its last round
        new = after[name][len(rows):]  # (the last round Tune recorded a checkpoint of: the round whose
        last = rows[-1]["round"]      # report was in flight at the stop, if any, is done again)
        assert new[0]["iterations_since_restore"] == 1 and last <= new[0]["round"] <= last + 1, (rows, new)
    assert "resumable: final test accuracy over seeds" in done.stdout


def blocks(n, rng, side=8, classes=4):
    """Images of a bright quadrant (its index is the class) on noise: a data set a small model learns."""
    labels = rng.integers(0, classes, n)
    images = rng.integers(0, 60, (n, side, side))
    half = side // 2
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 2)
        images[i, row * half:(row + 1) * half, col * half:(col + 1) * half] += 150
    return images.reshape(n, -1).astype(np.uint8), labels


def test_a_parquet_file_of_arrays_made_here_trains_through_sparana_run(head, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    images, labels = blocks(600, rng)
    table = pa.table({"pixels": pa.FixedSizeListArray.from_arrays(pa.array(images.reshape(-1)), 64),
                      "digit": pa.array(labels, pa.int16()),
                      "split": ["train"] * 480 + ["test"] * 120})
    pq.write_table(table, tmp_path / "blocks.parquet")
    (tmp_path / "blocks.yaml").write_text("""\
name: blocks
data: {path: blocks.parquet, image: pixels, label: digit}
model: {layers: [[relu, 32], [linear, 4]]}
experiment: train
rounds: 3
local_steps: 40
train: {batch_size: 32, learning_rate: 0.01}
""")
    results = tmp_path / "results"
    done = subprocess.run([str(SPARANA), "run", str(tmp_path / "blocks.yaml"), "--address", head.address,
                           "--results", str(results)], env=head.env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = json.loads((results / "blocks" / "run.json").read_text())
    assert [r["round"] for r in run["rounds"]] == [0, 1, 2]
    assert run["summary"]["accuracy"] > 0.9, run["summary"]  # 4 classes: chance is 0.25
    assert run["summary"]["parameters"] == 64 * 32 + 32 + 32 * 4 + 4
    assert "round 2: test accuracy" in done.stdout and "blocks: final test accuracy" in done.stdout
