"""Round checkpoints of a driver experiment, in the saver's safe format.

After every completed round the master model (weights, biases, prune and
training masks, dense or CSR layers) is written atomically to one file, with
``extra`` metadata: the experiment's name, its configuration, the seed, the
number of the round just completed and the figures of every round so far.
Workers keep no state between rounds (each round starts from the master's
weights with a fresh optimizer and its own random stream), so there is no
worker optimizer state to save: the master, the round number and the seed
determine the rest of the run.

Resuming refuses, before anything changes, a file cut short, of another
format version, of another experiment or configuration, or of another seed.
"""

from __future__ import annotations

import json
from pathlib import Path

from .._checks import is_integer
from ..io._checkpoint import read_checkpoint, save_checkpoint
from ..io._description import restore_layer
from ..io._header import check_fields
from ..io._safetensors import CheckpointError

KIND = "sparana.experiment_round"
# The header's ``extra`` entry of a round checkpoint: (what is expected, test) per key.
EXTRA_FIELDS = {
    "kind": (repr(KIND), lambda value: value == KIND),
    "experiment": ("a string", lambda value: isinstance(value, str)),
    "config": ("a JSON object", lambda value: isinstance(value, dict)),
    "seed": ("null or an integer", lambda value: value is None or is_integer(value, low=0)),
    "round": ("an integer >= 0", lambda value: is_integer(value, low=0)),
    "rounds": ("a list of per-round figures (JSON objects)",
               lambda value: isinstance(value, list) and all(isinstance(r, dict) for r in value)),
}


def _plain(config):
    """The configuration as JSON would give it back (tuples become lists...), for comparisons."""
    return json.loads(json.dumps(config, default=str))


class RoundCheckpoints:
    """The checkpoint file of one experiment: ``save`` after each round, ``resume_into`` a model."""

    def __init__(self, path, experiment, config, seed):
        self.path = Path(path)
        self.experiment = experiment
        self.config = _plain(config)
        self.seed = seed

    def exists(self):
        return self.path.exists()

    def save(self, model, round_index, rounds):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        extra = {"kind": KIND, "experiment": self.experiment, "config": self.config, "seed": self.seed,
                 "round": round_index, "rounds": rounds}
        return save_checkpoint(self.path, model, extra=extra)

    def resume_into(self, model):
        """Load the last completed round into ``model``; return (next round, figures of the rounds done).

        Layers that the experiment converted (to sparse) are rebuilt as they
        were saved; the model's depth and input size must match.
        """
        checkpoint = read_checkpoint(self.path)  # a file cut short or of another version raises here
        extra = checkpoint.extra or {}
        if extra.get("kind") == KIND:
            check_fields(self.path, "extra", extra, EXTRA_FIELDS)
        problem = self._mismatch(extra, checkpoint.architecture, model)
        if problem:
            raise CheckpointError(f"{self.path} cannot resume this experiment: {problem}")
        for i, spec in enumerate(checkpoint.architecture["layers"]):
            restore_layer(model, i, spec, checkpoint.layer_tensors(i))
        return extra["round"] + 1, list(extra["rounds"])

    def _mismatch(self, extra, architecture, model):
        if extra.get("kind") != KIND:
            return "it is not an experiment round checkpoint"
        if extra.get("experiment") != self.experiment:
            return f"it belongs to experiment {extra.get('experiment')!r}, not {self.experiment!r}"
        if extra.get("config") != self.config:
            return f"its configuration {extra.get('config')} differs from this run's {self.config}"
        if extra.get("seed") != self.seed:
            return f"its seed {extra.get('seed')!r} differs from this run's {self.seed!r}"
        if architecture["input_size"] != model.input_size or len(architecture["layers"]) != model.depth:
            return (f"it holds a model of {architecture['input_size']} inputs and {len(architecture['layers'])} "
                    f"layers, this run's has {model.input_size} and {model.depth}")
        if [spec["size"] for spec in architecture["layers"]] != [layer.size for layer in model.layers]:
            return "its layer sizes differ from this run's model"
        return None
