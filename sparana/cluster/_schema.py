"""What a config file may hold: each key's rule and default, and the checks across keys.

A rule takes a value and its key's path (``prune.targets.2``) and returns the value with defaults
filled in, or raises :class:`Invalid` saying what was expected and what was given. Rules compose:
a :class:`Section` is a mapping of keys to (rule, default); an unknown key names the nearest valid one.
"""

from __future__ import annotations

import copy
import difflib
import re

EXPERIMENTS = ("train_and_mix", "vulcanize", "prune_and_retrain", "train")
ACTIVATIONS = ("relu", "linear", "softmax")
REQUIRED = object()


class ConfigError(ValueError):
    """A config that cannot run: the message names the file, the key's path, what was expected and given."""


class Invalid(Exception):
    """A value that breaks a rule, at ``path``; :meth:`message` prefixes the file (and grid point)."""

    def __init__(self, path, text):
        super().__init__(f"{path}: {text}")
        self.path, self.text = path, text

    def message(self, source, where=""):
        return f"{source}: {self.path or '(top level)'}{where}: {self.text}"


def _given(value):
    return f"{value!r} ({type(value).__name__})" if isinstance(value, str) and _numeral(value) else repr(value)


def _numeral(text):
    return bool(re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text.strip()))


class Rule:
    """A value passing ``test`` (after ``convert``); ``expected`` says, for people, what passes."""

    def __init__(self, expected, test, convert=None):
        self.expected, self.test, self.convert = expected, test, convert

    def __call__(self, value, path):
        try:
            converted = self.convert(value) if self.convert else value
            ok = self.test(converted)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise Invalid(path, f"expected {self.expected}, got {_given(value)}")
        return converted


def integer(low=None, high=None):
    bounds = f" >= {low}" if high is None and low is not None else f" in {low}..{high}" if high is not None else ""

    def convert(value):  # YAML keys such as "2" (quoted) count as integers
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    return Rule(f"an integer{bounds}", lambda v: isinstance(v, int) and not isinstance(v, bool)
                and (low is None or v >= low) and (high is None or v <= high), convert)


def number(low=None, high=None, low_open=False, high_open=False):
    """A real number in the bounds given; numerals in quotes, or 1e-3 (a string to YAML), count too."""
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high}")

    def convert(value):
        if isinstance(value, str) and _numeral(value):
            return float(value)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    def test(v):
        return isinstance(v, float) and v == v and (low is None or (v > low if low_open else v >= low)) \
            and (high is None or (v < high if high_open else v <= high))

    return Rule("a number" + (" " + " and ".join(parts) if parts else ""), test, convert)


def choice(*options):
    return Rule("one of " + ", ".join(map(str, options)), lambda v: isinstance(v, str) and v in options)


def flag():
    return Rule("true or false", lambda v: isinstance(v, bool))


def text(pattern=None, expected="a string"):
    return Rule(expected, lambda v: isinstance(v, str) and bool(v) and (pattern is None or re.fullmatch(pattern, v)))


def either(*rules):
    """The first rule that passes; otherwise every rule's expectation."""
    expected = " or ".join(rule.expected for rule in rules)

    def check(value, path):
        sections = [rule for rule in rules if isinstance(rule, Section)]
        if isinstance(value, dict) and sections:  # a mapping: the section's own message (unknown key...)
            return sections[0](value, path)
        for rule in rules:
            try:
                return rule(value, path)
            except Invalid:
                continue
        raise Invalid(path, f"expected {expected}, got {_given(value)}")

    check.expected = expected
    return check


def nullable(rule):
    def check(value, path):
        return None if value is None else rule(value, path)

    check.expected = f"{rule.expected} or null"
    return check


def list_of(rule, min_length=0, length=None, what=None):
    expected = what or f"a list of {rule.expected}" + (f" (at least {min_length})" if min_length else "")

    def check(value, path):
        if not isinstance(value, (list, tuple)) or len(value) < min_length or (length and len(value) != length):
            raise Invalid(path, f"expected {expected}, got {_given(value)}")
        return [rule(item, f"{path}[{i}]") for i, item in enumerate(value)]

    check.expected = expected
    return check


def pair(first, second, what):
    def check(value, path):
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise Invalid(path, f"expected {what}, got {_given(value)}")
        return [first(value[0], f"{path}[0]"), second(value[1], f"{path}[1]")]

    check.expected = what
    return check


def mapping_of(key_rule, value_rule, what, min_length=0):
    def check(value, path):
        if not isinstance(value, dict) or len(value) < min_length:
            raise Invalid(path, f"expected {what}, got {_given(value)}")
        return {key_rule(k, f"{path}.{k}"): value_rule(v, f"{path}.{k}") for k, v in value.items()}

    check.expected = what
    return check


class Section:
    """A mapping with known keys: ``fields`` = {key: (rule, default or REQUIRED)}."""

    def __init__(self, fields, expected="a mapping"):
        self.fields, self.expected = fields, expected

    def __call__(self, value, path):
        if not isinstance(value, dict):
            raise Invalid(path, f"expected {self.expected} with keys {', '.join(self.fields)}, got {_given(value)}")
        where = (lambda key: f"{path}.{key}") if path else str
        for key in value:
            if key not in self.fields:
                close = difflib.get_close_matches(str(key), list(self.fields), n=1, cutoff=0.5)
                hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(self.fields)}"
                raise Invalid(where(key), f"unknown key {key!r} ({hint})")
        checked = {}
        for key, (rule, default) in self.fields.items():
            if key in value:
                checked[key] = rule(value[key], where(key))
            elif default is REQUIRED:
                raise Invalid(where(key), f"missing: expected {rule.expected}")
            else:
                checked[key] = copy.deepcopy(default)
        return checked


def validate(value, rule, path=""):
    return rule(value, path)


# ------------------------------------------------------------------------------ the schema
_PATH = text(expected="a path")
DATA = either(
    text(expected="mnist, fashion-mnist, a folder of IDX files, or an Arrow IPC or Parquet file"),
    Section({"path": (nullable(_PATH), None), "train": (nullable(_PATH), None), "test": (nullable(_PATH), None),
             "image": (text(expected="a column name"), "image"), "label": (text(expected="a column name"), "label"),
             "split": (text(expected="a column name"), "split"), "classes": (nullable(integer(1, 256)), None),
             "train_rows": (nullable(integer(1)), None), "test_rows": (nullable(integer(1)), None)},
            expected="a mapping {path: ...} or {train: PATH, test: PATH}"))
MODEL = Section({
    "layers": (list_of(pair(choice(*ACTIVATIONS), integer(1), "a pair [activation, size] such as [relu, 1000]"),
                       min_length=1), REQUIRED),
    "init": (either(choice("Xavier", "XSparse"), number(0, low_open=True)), "Xavier"),
    "bias": (number(), 0.1),
})
TRAIN = Section({
    "optimizer": (choice("adam", "sgd"), "adam"),
    "learning_rate": (number(0, low_open=True), 0.001),
    "batch_size": (integer(1), 128),
    "loss": (choice("cross_entropy", "quadratic"), "cross_entropy"),
    "momentum": (number(0), 0.0),
})
PRUNE = Section({
    "targets": (mapping_of(integer(0), number(0, 1, high_open=True), "a mapping {round: sparsity in [0, 1)}",
                           min_length=1), REQUIRED),
    "criterion": (choice("absolute", "MAAV"), "absolute"),
    "convert_at": (nullable(number(0, 1, low_open=True)), None),
    "layers": (nullable(list_of(integer(0), min_length=1)), None),
    "samples": (integer(1), 2000),
})
VULCANIZE = Section({
    "sizes": (nullable(list_of(integer(1), min_length=1)), None),
    "depth": (nullable(integer(1)), None),
    "selection": (choice("random", "max", "normal"), "random"),
    "consolidation": (choice("original", "mean", "none"), "original"),
    "std": (nullable(number(0, low_open=True)), None),
})
RESOURCES = Section({
    "cpus_per_worker": (nullable(number(0, low_open=True)), None),
    "gpus_per_worker": (nullable(number(0)), None),
    "driver_cpus": (number(0, low_open=True), 1.0),
})
SWEEP = Section({
    "grid": (mapping_of(text(expected="a grid key"), list_of(lambda v, p: v, min_length=1,
                                                              what="a non-empty list of values"),
                        "a mapping {key: [values...]}"), {}),
    "seeds": (nullable(list_of(integer(0), min_length=1)), None),
    "resources": (nullable(RESOURCES), None),
    "max_concurrent": (nullable(integer(1)), None),
    "early_stopping": (nullable(either(flag(), Section({"grace_period": (integer(1), 1),
                                                        "reduction_factor": (number(1, low_open=True), 2.0)}))),
                       None),
})
SCHEMA = Section({
    "name": (text(r"[A-Za-z0-9][A-Za-z0-9_.-]*", "a name of letters, digits, '_', '.' and '-' (a folder name)"),
             REQUIRED),
    "data": (DATA, "mnist"),
    "model": (MODEL, REQUIRED),
    "experiment": (choice(*EXPERIMENTS), REQUIRED),
    "workers": (nullable(integer(1)), None),
    "rounds": (integer(1), REQUIRED),
    "local_steps": (integer(1), REQUIRED),
    "seed": (integer(0), 0),
    "mix": (nullable(choice("average", "importance")), None),
    "train": (TRAIN, TRAIN({}, "train")),
    "prune": (nullable(PRUNE), None),
    "vulcanize": (nullable(VULCANIZE), None),
    "statistics_samples": (integer(1), 1000),
    "resources": (nullable(RESOURCES), None),
    "sweep": (nullable(SWEEP), None),
}, expected="a config mapping")


def check_experiment(config):
    """The checks across keys (which keys an experiment takes); fills the defaults that depend on it."""
    kind = config["experiment"]
    single = kind in ("train", "prune_and_retrain")
    if config["workers"] is None:
        config["workers"] = 1 if single else 2
    if single and config["workers"] != 1:
        raise Invalid("workers", f"expected 1 for experiment {kind} (one model trained on the whole training "
                                 f"set), got {config['workers']}")
    data = config["data"]
    if isinstance(data, dict) and (data["path"] is None) == (data["train"] is None or data["test"] is None):
        raise Invalid("data", "expected either path, or both train and test files")
    if config["mix"] is not None and kind != "train_and_mix":
        raise Invalid("mix", f"applies to experiment train_and_mix only, not {kind}")
    config["mix"] = config["mix"] or "average"
    if config["prune"] is None and kind == "prune_and_retrain":
        raise Invalid("prune", "missing: experiment prune_and_retrain needs prune: {targets: {round: sparsity}}")
    if config["prune"] is not None and kind in ("train", "vulcanize"):
        raise Invalid("prune", f"experiment {kind} does not prune: use prune_and_retrain or train_and_mix")
    if config["vulcanize"] is not None and kind != "vulcanize":
        raise Invalid("vulcanize", f"applies to experiment vulcanize only, not {kind}")
    if kind == "vulcanize" and config["vulcanize"] is None:
        config["vulcanize"] = VULCANIZE({}, "vulcanize")
    layers = config["model"]["layers"]
    if config["prune"] is not None:
        for round_index in config["prune"]["targets"]:
            if round_index >= config["rounds"]:
                raise Invalid(f"prune.targets.{round_index}", f"expected a round below rounds ({config['rounds']}; "
                                                              f"rounds count from 0), got {round_index}")
        for i, index in enumerate(config["prune"]["layers"] or []):
            if index >= len(layers):
                raise Invalid(f"prune.layers[{i}]", f"expected a layer index 0..{len(layers) - 1}, got {index}")
    return config
