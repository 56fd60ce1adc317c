"""Job results: a folder of JSON figures and PNG plots."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path



class Results:
    """Writes a job's figures to ``folder`` (created if needed): ``save_json``, ``plot``."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, name):
        return self.folder / name

    def save_json(self, name, data):
        """Write ``data`` as indented JSON, atomically."""
        target = self.path(name)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, default=_plain)
            handle.write("\n")
        os.replace(tmp, target)
        return target

    def plot(self, name, panels, title=None):
        """One PNG with a panel per entry of ``panels``: {panel title: (x label, y label, {series: (x, y)})}."""
        from matplotlib.figure import Figure  # imported here: a slow import; no pyplot, no global state

        fig = Figure(figsize=(5.5 * len(panels), 4))
        axes = fig.subplots(1, len(panels), squeeze=False)
        for ax, (panel, (xlabel, ylabel, series)) in zip(axes[0], panels.items()):
            for label, (xs, ys) in series.items():
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, label=label)
            ax.set_title(panel)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            if len(series) > 1:
                ax.legend()
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        target = self.path(name)
        fig.savefig(target, dpi=100)
        return target


def _plain(value):
    """JSON for NumPy scalars and arrays."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
