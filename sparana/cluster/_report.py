"""The report of a finished run or sweep: ``summary.csv``, a table, and PNG plots.

A sweep's folder (``results/<name>/``) holds Tune's trial folders (``params.json``: the grid point
and seed; ``result.json``: one line of figures per round) and ``sparana-sweep.json`` (the config:
its grid keys, and which of them set pruning); a run's folder holds ``run.json``. The report has
one row per grid point: the mean and standard deviation over seeds (the sample standard deviation;
0 for one seed) of the final test accuracy, sparsity (of the pruned layers), stored parameters and
wall time (the sum of the rounds' times), and the number of trials. Plots: the final accuracy
against the sparsity, one line per method (the grid keys that do not set pruning), with error bars
over seeds; and the accuracy per round of every grid point (mean, and a band of one standard
deviation).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

import sparana as sa

SNAPSHOT = "sparana-sweep.json"
RUN_FILE = "run.json"
SUMMARY = "summary.csv"
PLOTS = ("accuracy_vs_sparsity.png", "accuracy_per_round.png")
FIGURES = ("accuracy", "sparsity", "parameters", "wall_seconds")


class ReportError(ValueError):
    """A folder that holds no results Sparana can report."""


def write_report(folder, stream=None):
    """Write ``summary.csv`` and the plots into ``folder``, print the table to ``stream`` (if given);
    return the summary rows."""
    folder = Path(folder)
    meta, trials = load_trials(folder)
    rows = summarize(meta, trials)
    keys = meta["grid_keys"]
    columns = keys + [f"{figure}_{stat}" for figure in FIGURES for stat in ("mean", "std")] + ["rounds", "trials"]
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv(row[key]) for key in columns})
    (folder / SUMMARY).write_text(text.getvalue())
    _plot_accuracy_vs_sparsity(folder, meta, rows)
    _plot_rounds(folder, meta, trials)
    if stream is not None:
        print(table(meta, rows), file=stream)
        print(f"\n{folder / SUMMARY}, " + ", ".join(str(folder / name) for name in PLOTS), file=stream)
    return rows


def load_trials(folder):
    """(meta, trials) of a run or sweep folder: meta has ``name``, ``grid_keys``, ``sparsity_keys`` and
    ``points``; each trial has its ``point``, ``seed`` and per-round ``rows`` (round order)."""
    folder = Path(folder)
    if (folder / RUN_FILE).is_file():
        run = json.loads((folder / RUN_FILE).read_text())
        meta = {"name": run["name"], "grid_keys": [], "sparsity_keys": [], "points": [{}]}
        return meta, [{"point": {}, "seed": run["seed"], "rows": run["rounds"]}]
    if not (folder / SNAPSHOT).is_file():
        raise ReportError(f"{folder}: no Sparana results here (expected {RUN_FILE} from `sparana run` or "
                          f"{SNAPSHOT} from `sparana sweep`)")
    snapshot = json.loads((folder / SNAPSHOT).read_text())
    meta = {"name": folder.name, **{key: snapshot[key] for key in ("grid_keys", "sparsity_keys", "points")}}
    trials = []
    for trial in sorted(p for p in folder.iterdir() if (p / "params.json").is_file()):
        params = json.loads((trial / "params.json").read_text())
        lines = (trial / "result.json").read_text().splitlines() if (trial / "result.json").is_file() else []
        by_round = {}
        for line in filter(str.strip, lines):  # a round done again after a stop counts once (its last report)
            figures = json.loads(line)
            by_round[figures["round"]] = figures
        if by_round:
            trials.append({"point": {key: params[key] for key in meta["grid_keys"]}, "seed": params["seed"],
                           "rows": [by_round[r] for r in sorted(by_round)], "folder": trial.name})
    if not trials:
        raise ReportError(f"{folder}: no trial has reported a round yet")
    return meta, trials


def summarize(meta, trials):
    """One row per grid point (in the config's order) with the mean and std over its trials."""
    rows = []
    for point in meta["points"]:
        group = [t for t in trials if t["point"] == point]
        if not group:
            continue
        finals = [dict(t["rows"][-1], wall_seconds=sum(r["round_seconds"] for r in t["rows"])) for t in group]
        row = dict(point)
        for figure in FIGURES:
            values = [float(f.get(figure, math.nan)) for f in finals]
            row[f"{figure}_mean"] = float(np.mean(values))
            row[f"{figure}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        row["rounds"] = float(np.mean([len(t["rows"]) for t in group]))
        row["trials"] = len(group)
        rows.append(row)
    return rows


def table(meta, rows):
    """The summary as aligned text."""
    keys = meta["grid_keys"]
    header = keys + ["accuracy", "sparsity", "parameters", "wall s", "rounds", "trials"]
    body = [[_text(row[key]) for key in keys] + [
        f"{row['accuracy_mean']:.4f} ± {row['accuracy_std']:.4f}",
        f"{row['sparsity_mean']:.1%} ± {row['sparsity_std']:.1%}",
        f"{row['parameters_mean']:,.0f}", f"{row['wall_seconds_mean']:.1f} ± {row['wall_seconds_std']:.1f}",
        f"{row['rounds']:g}", str(row["trials"])] for row in rows]
    widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) if i < len(keys) else cell.rjust(width)
                       for i, (cell, width) in enumerate(zip(line, widths))) for line in [header] + body]
    title = f"{meta['name']}: final test accuracy over seeds (mean ± std)"
    return "\n".join([title, lines[0], "-" * len(lines[0]), *lines[1:]])


def _plot_accuracy_vs_sparsity(folder, meta, rows):
    from matplotlib.figure import Figure  # a slow import, only when plotting; no pyplot, no global state

    methods = [key for key in meta["grid_keys"] if key not in meta["sparsity_keys"]]
    figure = Figure(figsize=(6.5, 4.5))
    ax = figure.subplots()
    lines = {}
    for row in rows:
        lines.setdefault(_label({key: row[key] for key in methods}) or meta["name"], []).append(row)
    for label, members in lines.items():
        members.sort(key=lambda row: row["sparsity_mean"])
        ax.errorbar([100 * r["sparsity_mean"] for r in members], [r["accuracy_mean"] for r in members],
                    yerr=[r["accuracy_std"] for r in members], marker="o", capsize=4, label=label)
    ax.set_xlabel("sparsity of the pruned layers (%)")
    ax.set_ylabel("final test accuracy")
    ax.set_title(f"{meta['name']}: accuracy against sparsity (error bars: std over seeds)")
    ax.grid(alpha=0.3)
    if len(lines) > 1:
        ax.legend()
    figure.tight_layout()
    sa.Results(folder).save_figure(PLOTS[0], figure)


def _plot_rounds(folder, meta, trials):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.5, 4.5))
    ax = figure.subplots()
    for point in meta["points"]:
        group = [t["rows"] for t in trials if t["point"] == point]
        if not group:
            continue
        depth = max(len(rows) for rows in group)
        rounds = np.arange(depth)
        accuracy = [[rows[r]["accuracy"] for rows in group if r < len(rows)] for r in rounds]
        mean = np.array([np.mean(values) for values in accuracy])
        std = np.array([np.std(values, ddof=1) if len(values) > 1 else 0.0 for values in accuracy])
        (line,) = ax.plot(rounds, mean, marker="o", label=_label(point) or meta["name"])
        ax.fill_between(rounds, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{meta['name']}: accuracy per round (band: std over seeds)")
    ax.grid(alpha=0.3)
    if len(meta["points"]) > 1:
        ax.legend(fontsize="small")
    figure.tight_layout()
    sa.Results(folder).save_figure(PLOTS[1], figure)


def _label(point):
    return ", ".join(f"{key}={_text(value)}" for key, value in point.items())


def _text(value):
    return value if isinstance(value, str) else json.dumps(value)


def _csv(value):
    return _text(value) if not isinstance(value, (int, float)) or isinstance(value, bool) else value
