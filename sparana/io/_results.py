"""Job results: a folder of JSON figures and PNG plots, each written atomically (:mod:`._atomic`)."""

from __future__ import annotations

import json
from pathlib import Path

from ._atomic import atomic_write


class Results:
    """Writes a job's figures to ``folder`` (created if needed): ``save_json``, ``plot``, ``save_figure``."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, name):
        return self.folder / name

    def save_json(self, name, data):
        """Write ``data`` as indented JSON, atomically."""
        text = json.dumps(data, indent=2, default=json_default) + "\n"
        return atomic_write(self.path(name), lambda handle: handle.write(text.encode()))

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
        return self.save_figure(name, fig)

    def save_figure(self, name, figure, dpi=100):
        """Write a matplotlib ``figure`` as a PNG, atomically."""
        return save_png(self.path(name), figure, dpi)


def save_png(path, figure, dpi=100):
    """Write a matplotlib ``figure`` to ``path`` as a PNG, atomically; returns the path."""
    return atomic_write(path, lambda handle: figure.savefig(handle, dpi=dpi, format="png"))


def json_default(value):
    """JSON for NumPy scalars and arrays."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
