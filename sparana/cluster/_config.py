"""Experiment config files: loading, checking, and the grid points of their ``sweep:`` section.

A config is a YAML mapping (README.md, "Experiments from a config file"; ``experiments/`` holds
examples): the data set, the model, the experiment and its rounds, and an optional ``sweep:``
section whose ``grid:`` lists values per grid key and whose ``seeds:`` are part of the grid.

A grid point gives each grid key one of its values: ``${key}`` anywhere takes that value (a whole
string ``"${key}"`` becomes the value itself, with its type), and a grid key that names a key of the
config (``mix``, or a dotted path such as ``train.learning_rate``) sets it. Every grid point is
checked when the file is loaded, so a bad config is refused before anything runs, with the file,
the key's path, what was expected and what was given (an unknown key also names the nearest valid
one). Relative data paths (also those a grid point gives) are taken from the config file's folder.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..data._datasets import NAMED
from ._schema import SCHEMA, ConfigError, Invalid, check_experiment, validate

PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")

__all__ = ["Config", "ConfigError", "experiment_config", "load_config"]


@dataclass
class Config:
    """A checked config file: its experiment (``experiment()``) and its sweep's grid points and seeds."""

    source: str
    raw: dict
    sweep: dict | None = None
    overrides: dict = field(default_factory=dict)
    folder: str = "."  # the config file's folder (absolute): relative data paths start there

    @property
    def name(self):
        return self.raw.get("name") or Path(self.source).stem

    @property
    def grid(self):
        return dict(self.sweep["grid"]) if self.sweep else {}

    def points(self):
        """Every grid point ({grid key: value}), in the order of the file (the last key varies fastest)."""
        keys = list(self.grid)
        return [dict(zip(keys, values)) for values in itertools.product(*self.grid.values())] or [{}]

    def seeds(self):
        if self.sweep and self.sweep.get("seeds") is not None:
            return list(self.sweep["seeds"])
        return [self.raw.get("seed", 0)]

    def sparsity_keys(self):
        """The grid keys that set pruning (used in ``prune``): the x axis of the report's plots."""
        prune = self.raw.get("prune")
        used = set(PLACEHOLDER.findall(yaml.safe_dump(prune))) if prune is not None else set()
        return [key for key in self.grid if key in used or key.split(".")[0] == "prune"]

    def experiment(self, point=None, seed=None, check=True):
        """The experiment of one grid point (and seed): a plain dict with every default filled in."""
        point = dict(self.overrides, **(point or {}))
        where = f" (grid point {label(point)})" if point else ""
        config = _substitute(copy.deepcopy(self.raw), point, self.grid, "", self.source, where)
        for key, value in point.items():
            if _names_a_key(key):
                _set(config, key, copy.deepcopy(value), self.source)
        if seed is not None:
            config["seed"] = seed
        config.setdefault("name", self.name)
        _resolve_paths(config, Path(self.folder))
        if not check:
            return config
        try:
            return check_experiment(validate(config, SCHEMA))
        except Invalid as exc:  # name the grid point when the bad value came from it
            raise ConfigError(exc.message(self.source, where if self._from_grid(exc.path, point) else "")) from None

    def _from_grid(self, path, point):
        """Whether the value at ``path`` (``prune.targets.2``) was set by a grid key or a ``${...}``."""
        if any(path == key or path.startswith(key + ".") or key.startswith(path + ".") for key in point):
            return True
        value = self.raw
        for part in re.findall(r"[^.\[\]]+", path):
            if isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            elif isinstance(value, dict):
                matches = [k for k in value if str(k) == part]
                if not matches:
                    return False
                value = value[matches[0]]
            else:
                return False
        return "${" in yaml.safe_dump(value)


def load_config(path, overrides=None) -> Config:
    """Read and check a config file; raise :class:`ConfigError` (naming the file and key) if it cannot run.

    ``overrides``: {grid key or dotted key: value}, as ``sparana run --set key=value`` gives them.
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the config file ({exc.strerror or exc})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of keys (name:, data:, model:...), got {raw!r}")
    sweep = raw.pop("sweep", None)
    if sweep is not None:
        try:
            sweep = validate(sweep, SCHEMA.fields["sweep"][0], "sweep")
        except Invalid as exc:
            raise ConfigError(exc.message(source)) from None
    used = set(PLACEHOLDER.findall(yaml.safe_dump(raw)))
    for key in overrides or {}:
        if key not in used and not _names_a_key(key):
            raise ConfigError(f"{source}: --set {key}: expected a key of the config or a name used as ${{...}} "
                              f"({_nearest(key, used)}), got {key!r}")
    config = Config(source, raw, sweep, dict(overrides or {}), str(path.resolve().parent))
    for point in config.points():  # every grid point must run: refuse the file now, not mid-sweep
        config.experiment(point)
    for key in config.grid:
        if key == "seed":
            raise ConfigError(f"{source}: sweep.grid.seed: seeds are given by sweep.seeds: [0, 1, ...]")
        if key not in used and not _names_a_key(key):
            raise ConfigError(f"{source}: sweep.grid.{key}: expected a key of the config or a name used as "
                              f"${{...}} ({_nearest(key, used)}), got {key!r}")
    return config


def experiment_config(raw, source="config"):
    """A config mapping written in Python (what a config file holds, without ``sweep``), checked and with
    every default filled in, as :meth:`Config.experiment` gives it; ConfigError naming ``source`` otherwise."""
    try:
        return check_experiment(validate(copy.deepcopy(raw), SCHEMA))
    except Invalid as exc:
        raise ConfigError(exc.message(source)) from None


def label(point):
    """A grid point as text: ``sparsity=0.8, mix=average``."""
    return ", ".join(f"{key}={value}" for key, value in point.items())


def _names_a_key(key):
    return key.split(".")[0] in SCHEMA.fields and key.split(".")[0] != "sweep"


def _set(config, dotted, value, source):
    *parents, last = dotted.split(".")
    for part in parents:
        config = config.setdefault(part, {})
        if not isinstance(config, dict):
            raise ConfigError(f"{source}: sweep.grid.{dotted}: expected {part} to be a mapping, got {config!r}")
    config[last] = value


def _substitute(value, point, grid, path, source, where):
    """``value`` with every ``${key}`` replaced by the grid point's value."""
    if isinstance(value, dict):
        return {k: _substitute(v, point, grid, f"{path}.{k}" if path else str(k), source, where)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, point, grid, f"{path}[{i}]", source, where) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    for key in PLACEHOLDER.findall(value):
        if key in point:
            continue
        if key in grid:
            raise ConfigError(f"{source}: {path}: ${{{key}}} has no value: it is a grid key of sweep.grid, and "
                              f"`sparana run` runs one experiment: give it with --set {key}=VALUE, or run "
                              f"`sparana sweep`")
        known = ", ".join(grid) or "none"
        raise ConfigError(f"{source}: {path}{where}: ${{{key}}} names no grid key (the grid keys: {known})")
    whole = PLACEHOLDER.fullmatch(value)
    if whole:
        return copy.deepcopy(point[whole.group(1)])
    return PLACEHOLDER.sub(lambda match: str(point[match.group(1)]), value)


def _nearest(key, used):
    """'did you mean ...?' with the nearest config key or ${...} name, or the names used."""
    names = [name for name in SCHEMA.fields if name != "sweep"] + sorted(used)
    close = difflib.get_close_matches(key.split(".")[0], names, n=1, cutoff=0.5)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"the ${{...}} names used: {', '.join(sorted(used))}" if used else "no ${...} is used"


def _resolve_paths(raw, folder):
    """Data paths relative to the config file's folder become absolute (trials run in other folders)."""
    data = raw.get("data")

    def absolute(value):
        if isinstance(value, str) and value not in NAMED and "${" not in value:
            return str((folder / Path(value).expanduser()).resolve())
        return value

    if isinstance(data, str):
        raw["data"] = absolute(data)
    elif isinstance(data, dict):
        for key in ("path", "train", "test"):
            if key in data:
                data[key] = absolute(data[key])
