"""The report of a sweep: summary.csv, its table and plots, from Tune's trial folders (written here)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sparana import cluster

SPARANA = Path(sys.executable).parent / "sparana"
POINTS = [{"sparsity": s, "mix": m} for s in (0.8, 0.9) for m in ("average", "importance")]


def sweep_folder(tmp_path):
    """A finished sweep's folder as Tune and the trials leave it: 4 grid points x 2 seeds, 3 rounds each."""
    folder = tmp_path / "prune-sweep"
    folder.mkdir()
    (folder / "sparana-sweep.json").write_text(json.dumps({"points": POINTS, "grid_keys": ["sparsity", "mix"],
                                                           "sparsity_keys": ["sparsity"], "seeds": [0, 1]}))
    for i, (point, seed) in enumerate((p, s) for p in POINTS for s in (0, 1)):
        trial = folder / f"sparana_trial_{i:05d}"
        trial.mkdir()
        (trial / "params.json").write_text(json.dumps(dict(point, seed=seed)))
        bonus = 0.02 * (point["mix"] == "importance") - 0.1 * (point["sparsity"] - 0.8) + 0.01 * seed
        rows = [{"round": r, "accuracy": 0.5 + 0.1 * r + bonus, "sparsity": point["sparsity"] if r else 0.0,
                 "parameters": 1000 - r, "round_seconds": 2.0 + seed} for r in range(3)]
        if i == 0:  # stopped after round 1 and resumed: round 1 was reported twice, the last report counts
            rows.insert(2, dict(rows[1], accuracy=0.0))
            rows[1], rows[2] = rows[2], rows[1]
        (trial / "result.json").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "sparana_trial_99999").mkdir()  # a trial that never reported (not counted)
    (folder / "sparana_trial_99999" / "params.json").write_text(json.dumps(dict(POINTS[0], seed=5)))
    return folder


def test_the_summary_has_one_row_per_grid_point_with_mean_and_std_over_seeds(tmp_path):
    folder = sweep_folder(tmp_path)
    rows = cluster.write_report(folder)
    with open(folder / "summary.csv") as handle:
        summary = list(csv.DictReader(handle))
    assert len(rows) == len(summary) == 4
    assert [(row["sparsity"], row["mix"]) for row in summary] == [("0.8", "average"), ("0.8", "importance"),
                                                                   ("0.9", "average"), ("0.9", "importance")]
    first = summary[1]  # sparsity 0.8, importance: final accuracies 0.72 and 0.73
    assert float(first["accuracy_mean"]) == pytest.approx(0.725)
    assert float(first["accuracy_std"]) == pytest.approx(0.00707107, rel=1e-5)  # the sample std of two seeds
    assert float(first["sparsity_mean"]) == pytest.approx(0.8) and float(first["parameters_mean"]) == 998
    assert float(first["wall_seconds_mean"]) == pytest.approx(7.5)  # rounds' times summed: 6 and 9 s
    assert first["trials"] == "2" and first["rounds"] == "3.0"
    assert summary[0]["rounds"] == "3.0"  # the round reported twice (stopped, resumed) counted once
    for name in ("accuracy_vs_sparsity.png", "accuracy_per_round.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sparana_report_prints_the_table(tmp_path):
    folder = sweep_folder(tmp_path)
    done = subprocess.run([str(SPARANA), "report", str(folder)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "prune-sweep: final test accuracy over seeds (mean ± std)"
    assert lines[1].split() == ["sparsity", "mix", "accuracy", "sparsity", "parameters", "wall", "s", "rounds",
                                "trials"]
    assert lines[4].split() == ["0.8", "importance", "0.7250", "±", "0.0071", "80.0%", "±", "0.0%", "998", "7.5",
                                "±", "2.1", "3", "2"]
