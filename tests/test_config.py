"""Config files: what they expand to, how bad ones are refused, and the `sparana` command around them."""

import subprocess
import sys
from pathlib import Path

import pytest

from sparana import cluster

ROOT = Path(__file__).resolve().parents[1]
SPARANA = Path(sys.executable).parent / "sparana"
GOOD = """\
name: prune-sweep
model:
  layers: [[relu, 100], [relu, 50], [linear, 10]]
experiment: train_and_mix
workers: 2
rounds: 4
local_steps: 50
prune: {targets: {1: 0.5, 2: "${sparsity}"}, criterion: MAAV, convert_at: 0.9}
sweep:
  grid: {sparsity: [0.8, 0.9], mix: [average, importance]}
  seeds: [0, 1]
"""


def write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def refused(tmp_path, text):
    """The message of the ConfigError that loading ``text`` raises."""
    path = write(tmp_path, text)
    with pytest.raises(cluster.ConfigError) as caught:
        cluster.load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message  # every message names the file first
    return message[len(str(path)) + 2:]


def test_the_issue_config_expands_to_its_grid_points_and_seeds():
    config = cluster.load_config(ROOT / "experiments" / "prune_sweep.yaml")
    assert config.name == "prune-sweep" and config.seeds() == [0, 1]
    assert config.points() == [{"sparsity": 0.8, "mix": "average"}, {"sparsity": 0.8, "mix": "importance"},
                               {"sparsity": 0.9, "mix": "average"}, {"sparsity": 0.9, "mix": "importance"}]
    assert config.sparsity_keys() == ["sparsity"]
    experiment = config.experiment({"sparsity": 0.9, "mix": "importance"}, seed=1)
    assert experiment["prune"]["targets"] == {1: 0.5, 2: 0.9}  # "${sparsity}" became the number itself
    assert experiment["mix"] == "importance" and experiment["seed"] == 1 and experiment["workers"] == 2
    assert experiment["train"] == {"optimizer": "adam", "learning_rate": 0.001, "batch_size": 128,
                                   "loss": "cross_entropy", "momentum": 0.0}


def test_every_config_in_experiments_is_valid():
    names = sorted(path.name for path in (ROOT / "experiments").glob("*.yaml"))
    assert len(names) >= 5
    for name in names:
        cluster.load_config(ROOT / "experiments" / name)


def test_placeholders_inside_strings_dotted_grid_keys_and_relative_data_paths(tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    path = write(folder, GOOD.replace("name: prune-sweep", "name: sweep\ndata: {path: data/set.parquet, "
                                      "label: 'y_${column}'}").replace(
        "grid: {sparsity: [0.8, 0.9], mix: [average, importance]}",
        "grid: {sparsity: [0.8], column: [a], train.learning_rate: [0.01, 0.1]}"))
    config = cluster.load_config(path)
    experiment = config.experiment(config.points()[1])
    assert experiment["data"]["path"] == str(folder / "data" / "set.parquet")  # from the config's folder
    assert experiment["data"]["label"] == "y_a" and experiment["train"]["learning_rate"] == 0.1


@pytest.mark.parametrize("change, message", [
    (("rounds: 4", "rounds: four"), "rounds: expected an integer >= 1, got 'four'"),
    (("rounds: 4", "rounds: 0"), "rounds: expected an integer >= 1, got 0"),
    (("workers: 2", "wokers: 2"), "wokers: unknown key 'wokers' (did you mean 'workers'?)"),
    (("criterion: MAAV", "criterion: MAAV, convert: 0.9"),
     "prune.convert: unknown key 'convert' (did you mean 'convert_at'?)"),
    (("[relu, 50]", "[tanh, 50]"), "model.layers[1][0]: expected one of relu, linear, softmax, got 'tanh'"),
    (("[relu, 50]", "[relu]"),
     "model.layers[1]: expected a pair [activation, size] such as [relu, 1000], got ['relu']"),
    (("experiment: train_and_mix", "experiment: federated"),
     "experiment: expected one of train_and_mix, vulcanize, prune_and_retrain, train, got 'federated'"),
    (("[0.8, 0.9]", "[0.8, 1.5]"),
     "prune.targets.2 (grid point sparsity=1.5, mix=average): expected a number >= 0 and < 1, got 1.5"),
    (("[average, importance]", "[average, best]"),
     "mix (grid point sparsity=0.8, mix=best): expected one of average, importance, got 'best'"),
    (('"${sparsity}"', '"${sparsty}"'),
     "prune.targets.2 (grid point sparsity=0.8, mix=average): ${sparsty} names no grid key (the grid keys: "
     "sparsity, mix)"),
    (("mix: [average, importance]", "mixing: [average]"),
     "sweep.grid.mixing: expected a key of the config or a name used as ${...} (did you mean 'mix'?), got 'mixing'"),
    (("seeds: [0, 1]", "seeds: [0, -1]"), "sweep.seeds[1]: expected an integer >= 0, got -1"),
    (("seeds: [0, 1]", "seeds: [0, 1]\n  max_concurent: 2"),
     "sweep.max_concurent: unknown key 'max_concurent' (did you mean 'max_concurrent'?)"),
    (("{1: 0.5,", "{7: 0.5,"), "prune.targets.7: expected a round below rounds (4; rounds count from 0), got 7"),
    (("experiment: train_and_mix", "experiment: vulcanize"),
     "mix (grid point sparsity=0.8, mix=average): applies to experiment train_and_mix only, not vulcanize"),
    (("experiment: train_and_mix\nworkers: 2", "experiment: prune_and_retrain\nworkers: 2"),
     "workers: expected 1 for experiment prune_and_retrain (one model trained on the whole training set), got 2"),
    (("local_steps: 50\n", ""), "local_steps: missing: expected an integer >= 1"),
    (("name: prune-sweep", "name: prune sweep"),
     "name: expected a name of letters, digits, '_', '.' and '-' (a folder name), got 'prune sweep'"),
    (("model:\n", "data: {path: a.parquet, imgae: pixels}\nmodel:\n"),
     "data.imgae: unknown key 'imgae' (did you mean 'image'?)"),
    (("model:\n", "data: 7\nmodel:\n"), "data: expected mnist, fashion-mnist, a folder of IDX files, or an Arrow "
                                        "IPC or Parquet file or a mapping {path: ...} or {train: PATH, test: PATH}, "
                                        "got 7"),
])
def test_a_bad_config_is_refused_with_the_key_what_was_expected_and_what_was_given(tmp_path, change, message):
    old, new = change
    assert old in GOOD
    assert refused(tmp_path, GOOD.replace(old, new, 1)) == message


def test_a_file_that_is_not_yaml_or_not_a_mapping_is_refused(tmp_path):
    assert refused(tmp_path, "name: [unclosed\n").startswith("not valid YAML: ")
    assert "line 1, column 7" in refused(tmp_path, "name: [unclosed\n")
    assert refused(tmp_path, "- just\n- a list\n") == \
        "expected a mapping of keys (name:, data:, model:...), got ['just', 'a list']"


def test_a_model_whose_outputs_are_not_the_data_set_classes_is_refused(tmp_path):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = np.zeros((6, 4), np.uint8)
    pq.write_table(pa.table({"image": pa.FixedSizeListArray.from_arrays(pa.array(images.reshape(-1)), 4),
                             "label": [0, 1, 2, 0, 1, 2], "split": ["train"] * 4 + ["test"] * 2}),
                   tmp_path / "three.parquet")
    path = write(tmp_path, "name: three\ndata: three.parquet\nmodel: {layers: [[linear, 10]]}\n"
                           "experiment: train\nrounds: 1\nlocal_steps: 1\n")
    experiment = cluster.load_config(path).experiment()
    with pytest.raises(cluster.ConfigError, match=r"config.yaml: model.layers\[0\]\[1\]: expected 3 units "
                                                  r"\(the data set has 3 classes\), got 10"):
        cluster.load_data(experiment, str(path))


def sparana(*args, cwd=None):
    return subprocess.run([str(SPARANA), *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_sparana_exits_with_status_2_on_a_bad_config_before_anything_runs(tmp_path):
    path = write(tmp_path, GOOD.replace("workers: 2", "wokers: 2"))
    for command in ("run", "sweep"):
        done = sparana(command, path, "--address", "127.0.0.1:1")  # nothing listens there: Ray is never reached
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines()[-1] == (f"sparana {command}: error: {path}: wokers: unknown key "
                                                        f"'wokers' (did you mean 'workers'?)")
    done = sparana("run", write(tmp_path, GOOD, "good.yaml"), "--address", "127.0.0.1:1")
    assert done.returncode == 2 and "prune.targets.2: ${sparsity} has no value: it is a grid key of sweep.grid, " \
        "and `sparana run` runs one experiment: give it with --set sparsity=VALUE" in done.stderr
    done = sparana("sweep", write(tmp_path, GOOD.split("sweep:")[0].replace('"${sparsity}"', "0.8"), "one.yaml"))
    assert done.returncode == 2 and "sweep: missing: expected a sweep: section" in done.stderr
    done = sparana("report", tmp_path)
    assert done.returncode == 2 and "no Sparana results here" in done.stderr


def test_every_command_has_help():
    for command in ((), ("run",), ("sweep",), ("report",)):
        done = sparana(*command, "--help")
        assert done.returncode == 0 and done.stdout.startswith(f"usage: sparana {' '.join(command)}".rstrip())
    assert "sparana sweep CONFIG.yaml [--resume]" in sparana("--help").stdout
    assert "--resume" in sparana("sweep", "--help").stdout and "--set KEY=VALUE" in sparana("run", "--help").stdout


def test_early_stopping_is_asha_on_the_test_accuracy_in_rounds(tmp_path):
    from ray.tune.schedulers import ASHAScheduler

    from sparana.cluster._sweep import _tune_config

    from ray import tune

    config = cluster.load_config(write(tmp_path, GOOD + "  early_stopping: {grace_period: 2, reduction_factor: 3}\n"
                                                        "  max_concurrent: 3\n"))
    tuned = _tune_config(config, tune)
    assert isinstance(tuned.scheduler, ASHAScheduler) and tuned.max_concurrent_trials == 3
    assert (tuned.scheduler._metric, tuned.scheduler._mode, tuned.scheduler._max_t) == ("accuracy", "max", 4)
    assert tuned.scheduler._reduction_factor == 3 and _tune_config(cluster.load_config(write(
        tmp_path, GOOD, "plain.yaml")), tune).scheduler is None
