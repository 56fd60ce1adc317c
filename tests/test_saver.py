"""Checkpoint files and ModelSaver: bit-for-bit round trips, rejected files, atomic writes, snapshots."""

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save as st_save

import sparana as sa
from conftest import build_model
from sparana.io import _checkpoint, _description, _safetensors, _saver
from sparana.io._checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from sparana.compat import model_saver
from sparana.io._saver import ModelSaver

SIZES = [6, 8, 5, 3]
ACTIVATIONS = ["relu", "relu", "linear"]
KINDS = {"dense": False, "sparse": True, "mixed": [False, True, False]}


def blob(array):
    array = np.asarray(array)
    return (array.dtype.str, array.shape, array.tobytes())


def fingerprint(model):
    """Everything a layer holds, as bytes: kind, shape, values, biases, pattern, masks."""
    result = []
    for layer in model.layers:
        entry = [type(layer).__name__, layer.input_size, layer.size, blob(layer.values), blob(layer.biases)]
        if layer.is_sparse:
            entry += [blob(layer.pattern.indices), blob(layer.pattern.indptr)]
        for mask in (layer.prune_mask, layer.training_mask):
            entry.append(None if mask is None else blob(mask))
        result.append(entry)
    return result


def optimizer_fingerprint(optimizer):
    state = optimizer.state_dict()
    slots = {key: {name: (value if name == "shape" else blob(value)) for name, value in entry.items()}
             for key, entry in state["slots"].items()}
    return state["class"], state["steps"], slots


def make_model(kind, dtype="float64", seed=0, sizes=SIZES, **options):
    model = build_model(sizes, ACTIVATIONS, sparse=KINDS[kind], density=0.6, seed=seed, dtype=dtype, **options)
    masks = np.random.default_rng(seed + 100)
    if not model.layers[0].is_sparse:  # a pruned dense layer
        model.layers[0].keep_only(masks.random((sizes[0], sizes[1])) < 0.7)
    model.layers[1].training_mask = masks.random(model.layers[1].values.shape) < 0.5
    return model


def batch(dtype="float64", n=10):
    data = np.random.default_rng(7)
    return data.random((n, SIZES[0])).astype(dtype), np.arange(n) % SIZES[-1]


def train(optimizer, steps, dtype="float64"):
    x, y = batch(dtype)
    for _ in range(steps):
        optimizer.train_step(x, y)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["dense", "sparse", "mixed"])
def test_save_load_round_trip_and_resumed_training_are_bit_for_bit(kind, dtype, tmp_path):
    path = tmp_path / "model.safetensors"
    model = make_model(kind, dtype, dropout=0.2)  # dropout: the random state must be restored too
    optimizer = sa.AdamOptimizer(model, 0.01)
    train(optimizer, 3, dtype)
    save_checkpoint(path, model, optimizer, extra={"experiment": "round trip", "round": np.int64(3)})
    saved, saved_optimizer = fingerprint(model), optimizer_fingerprint(optimizer)
    x, _ = batch(dtype)
    saved_outputs = blob(model.outputs(x))
    train(optimizer, 3, dtype)  # the run that never stopped
    expected = fingerprint(model)

    checkpoint = read_checkpoint(path)
    rebuilt = load_checkpoint(path)  # a new model from the file
    rebuilt_optimizer = checkpoint.build_optimizer(rebuilt)
    other = make_model(kind, dtype, seed=5, dropout=0.2)  # same architecture, other weights and masks
    other_optimizer = sa.AdamOptimizer(other, 0.01)
    assert load_checkpoint(path, other, other_optimizer) is other
    for resumed, resumed_optimizer in ((rebuilt, rebuilt_optimizer), (other, other_optimizer)):
        assert fingerprint(resumed) == saved
        assert optimizer_fingerprint(resumed_optimizer) == saved_optimizer
        assert blob(resumed.outputs(x)) == saved_outputs
        train(resumed_optimizer, 3, dtype)
        assert fingerprint(resumed) == expected
    assert checkpoint.extra == {"experiment": "round trip", "round": 3}
    assert rebuilt.dtype == np.dtype(dtype).type and rebuilt.dropout == 0.2


@pytest.mark.parametrize("make_optimizer", [
    lambda m: sa.SGDOptimizer(m, 0.05, momentum=0.9, l2_constant=1e-3),
    lambda m: sa.SelectedAdamOptimizer(m, 0.01, clip=1.0, backward_layers=2),
    lambda m: sa.MadadadOptimizer(m, 0.01, friction=0.5),
    lambda m: sa.AdadadOptimizer(m, 0.01, friction=0.5, momentum=0.5),
])
def test_every_optimizer_is_rebuilt_from_the_file(make_optimizer, tmp_path):
    path = tmp_path / "opt.safetensors"
    model = make_model("mixed")
    for layer in model.layers:
        if layer.training_mask is None:
            layer.training_mask = np.ones(layer.values.shape, dtype=bool)
    optimizer = make_optimizer(model)
    train(optimizer, 12)
    save_checkpoint(path, model, optimizer)
    checkpoint = read_checkpoint(path)
    rebuilt = checkpoint.build_model()
    rebuilt_optimizer = checkpoint.build_optimizer(rebuilt)
    assert _checkpoint.optimizer_config(rebuilt_optimizer) == _checkpoint.optimizer_config(optimizer)
    assert optimizer_fingerprint(rebuilt_optimizer) == optimizer_fingerprint(optimizer)
    train(optimizer, 3)
    train(rebuilt_optimizer, 3)
    assert fingerprint(rebuilt) == fingerprint(model)


def test_header_only_read_is_cheap_and_complete(tmp_path):
    path = tmp_path / "m.safetensors"
    model = make_model("mixed", "float32", seed=3)
    optimizer = sa.AdamOptimizer(model, 0.01)
    save_checkpoint(path, model, optimizer, extra={"seeds": [1, 2], "config": {"lr": 0.01}})
    header = read_checkpoint(path, tensors=False)
    assert header.version == 1 and header.format == "sparana.checkpoint" and header.tensors is None
    assert header.extra == {"seeds": [1, 2], "config": {"lr": 0.01}}
    arch = header.architecture
    assert arch["input_size"] == 6 and arch["dtype"] == "float32" and arch["seed"] == 3
    assert [(s["kind"], s["activation"], s["input_size"], s["size"]) for s in arch["layers"]] == [
        ("dense", "relu", 6, 8), ("sparse", "relu", 8, 5), ("dense", "linear", 5, 3)]
    assert header.optimizer_config["class"] == "AdamOptimizer"
    assert header.optimizer_config["hyperparameters"]["learning_rate"] == 0.01
    with pytest.raises(RuntimeError, match="tensors=False"):
        header.build_model()
    # The format is plain safetensors: the header is readable with safetensors alone.
    with safe_open(path, framework="numpy") as handle:
        assert json.loads(handle.metadata()["extra"])["seeds"] == [1, 2]
        assert handle.get_tensor("layers.1.indptr").dtype == np.int64
    no_optimizer = tmp_path / "plain.safetensors"
    save_checkpoint(no_optimizer, model)
    assert read_checkpoint(no_optimizer).optimizer is None


# ------------------------------------------------------------------------ bad files
def rewrite(source, target, tensors=None, metadata=None):
    """Copy a checkpoint, passing its tensors and metadata through the given editing functions."""
    with safe_open(source, framework="numpy") as handle:
        arrays = {name: handle.get_tensor(name) for name in handle.keys()}
        header = dict(handle.metadata())
    arrays = tensors(arrays) if tensors else arrays
    header = metadata(header) if metadata else header
    Path(target).write_bytes(st_save(arrays, header))
    return target


class Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.fixture
def saved(tmp_path):
    """A saved mixed model with an optimizer, and a target model and optimizer of the same architecture."""
    path = tmp_path / "good.safetensors"
    model = make_model("mixed", seed=1)
    optimizer = sa.AdamOptimizer(model, 0.01)
    train(optimizer, 2)
    save_checkpoint(path, model, optimizer)
    target = make_model("mixed", seed=2)
    target_optimizer = sa.AdamOptimizer(target, 0.01)
    train(target_optimizer, 1)
    return path, target, target_optimizer


def edited_weights(arrays):
    arrays["layers.0.weights"] = arrays["layers.0.weights"][:, :7].copy()
    return arrays


def pickle_in_a_tensor(arrays):
    arrays["layers.2.weights"] = np.frombuffer(pickle.dumps(Payload("never")), dtype=np.uint8).copy()
    return arrays


def drop(name):
    def edit(arrays):
        del arrays[name]
        return arrays
    return edit


def with_metadata(**changes):
    return lambda header: dict(header, **changes)


def other_architecture(arch_edit):
    def edit(header):
        arch = json.loads(header["architecture"])
        arch_edit(arch)
        return dict(header, architecture=json.dumps(arch))
    return edit


BAD_FILES = {
    "cut short": (lambda src, dst: dst.write_bytes(src.read_bytes()[:-25]), "cut short"),
    "cut in the header": (lambda src, dst: dst.write_bytes(src.read_bytes()[:40]), "cut short"),
    "empty": (lambda src, dst: dst.write_bytes(b""), "not a readable safetensors file"),
    "text file": (lambda src, dst: dst.write_text("weights: [1, 2, 3]\n" * 20), "not a readable safetensors"),
    "pickle file": (lambda src, dst: dst.write_bytes(pickle.dumps(Payload(dst.with_suffix(".pwned")))),
                    "not a readable safetensors file"),
    "foreign safetensors": (lambda src, dst: dst.write_bytes(st_save({"w": np.zeros(3)})),
                            "no 'format' entry in its header"),
    "other format": (lambda src, dst: rewrite(src, dst, metadata=with_metadata(format="acme.weights")),
                     "got a safetensors file with format 'acme.weights'"),
    "other version": (lambda src, dst: rewrite(src, dst, metadata=with_metadata(format_version="2")),
                      "format version '2' is not supported; this Sparana reads version 1"),
    "wrong tensor shape": (lambda src, dst: rewrite(src, dst, tensors=edited_weights),
                           r"layer 0: tensor 'weights' of shape \(6, 8\) and dtype float64 expected, "
                           r"got shape \(6, 7\)"),
    "pickle in a tensor": (lambda src, dst: rewrite(src, dst, tensors=pickle_in_a_tensor),
                           r"layer 2: tensor 'weights' of shape \(5, 3\) and dtype float64 expected, got shape"),
    "missing biases": (lambda src, dst: rewrite(src, dst, tensors=drop("layers.1.biases")),
                       r"layer 1: missing tensor\(s\) \['biases'\]"),
    "missing optimizer state": (lambda src, dst: rewrite(src, dst, tensors=drop("optimizer.2.weights.v")),
                                r"optimizer state of layer 2 \(weights\): missing tensor\(s\)"),
    "unknown tensor": (lambda src, dst: rewrite(src, dst, tensors=lambda a: dict(a, evil=np.zeros(2))),
                       r"unexpected tensor\(s\) \['evil'\]"),
    "bad JSON": (lambda src, dst: rewrite(src, dst, metadata=with_metadata(architecture="{not json")),
                 "'architecture' is not valid JSON"),
    "another architecture": (lambda src, dst: save_checkpoint(dst, make_model("mixed", sizes=[6, 8, 5, 4])),
                             r"does not fit the model: layer 2 size: the checkpoint has 4, the model has 3"),
    "optimizer of another shape": (lambda src, dst: rewrite(src, dst, metadata=other_architecture(
        lambda a: a["layers"][2].update(size=4))),
        r"optimizer.slots\[4\].shape must be \[5, 4\] \(layer 2's \[n_in, n_out\]\), got \[5, 3\]"),
    "header and tensors disagree": (lambda src, dst: rewrite(src, dst, metadata=other_architecture(
        lambda a: a["layers"][1].update(kind="dense"))), r"layer 1: missing tensor\(s\) \['weights'\]"),
    "dtype differs": (lambda src, dst: rewrite(src, dst, tensors=lambda a: {
        k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in a.items()},
        metadata=other_architecture(lambda a: a.update(dtype="float32"))),
        "dtype: the checkpoint has 'float32', the model has 'float64'"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_raise_a_clear_error_and_change_nothing(case, saved, tmp_path):
    path, target, target_optimizer = saved
    make_file, message = BAD_FILES[case]
    bad = tmp_path / "bad.safetensors"
    make_file(path, bad)
    before, before_optimizer = fingerprint(target), optimizer_fingerprint(target_optimizer)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(bad, target, target_optimizer)
    assert fingerprint(target) == before
    assert optimizer_fingerprint(target_optimizer) == before_optimizer
    assert not list(tmp_path.glob("*.pwned"))  # no pickle payload ran
    load_checkpoint(path, target, target_optimizer)  # the good file still loads into it


MISSING = object()


def set_field(entry, where, value):
    """A header edit: in the JSON entry ``entry``, the field at ``where`` (keys, indices) set to ``value``
    (the whole entry when ``where`` is empty), or deleted when ``value`` is MISSING."""
    def edit(header):
        if not where:
            return dict(header, **{entry: json.dumps(value)})
        data = json.loads(header[entry])
        target = data
        for key in where[:-1]:
            target = target[key]
        if value is MISSING:
            del target[where[-1]]
        elif callable(value):
            target[where[-1]] = value(data)
        else:
            target[where[-1]] = value
        return dict(header, **{entry: json.dumps(data)})
    return edit


def header_cases():
    """(entry, where, value, the start of the message naming the field), one per corruption."""
    def field(entry, where):
        return ".".join([entry] + [f"[{k}]" if isinstance(k, int) else k for k in where]).replace(".[", "[")

    def each(entry, where, *bad):
        name = field(entry, where)
        yield entry, where, MISSING, f"{name} is missing"
        for value in bad:
            yield entry, where, value, f"{name} must be"

    yield "architecture", [], [], "architecture must be a JSON object"
    yield from each("architecture", ["input_size"], "6", 0, True)
    yield from each("architecture", ["dtype"], 32, "float16")
    yield from each("architecture", ["dropout"], "half", 1.0, -0.5)
    yield from each("architecture", ["dropout_style"], 1, "sideways")
    yield from each("architecture", ["seed"], "1", -1, 2.5)
    yield from each("architecture", ["layers"], {}, [])
    yield "architecture", ["colour"], "blue", "architecture has unexpected key(s) ['colour']"
    yield "architecture", ["layers", 1], "dense", "architecture.layers[1] must be a JSON object"
    yield from each("architecture", ["layers", 1, "kind"], 1, "conv")
    yield from each("architecture", ["layers", 1, "activation"], None, "tanh")
    yield from each("architecture", ["layers", 1, "size"], "5", 0)
    yield from each("architecture", ["layers", 1, "input_size"], 8.0, 9)
    yield from each("architecture", ["layers", 1, "dropout"], "half", 1.5)
    yield "architecture", ["layers", 1, "colour"], 1, "architecture.layers[1] has unexpected key(s) ['colour']"
    yield "rng_state", [], [1, 2], "rng_state must be a JSON object (or absent)"
    yield "rng_state", ["bit_generator"], MISSING, "rng_state must be a JSON object naming its 'bit_generator'"
    yield "rng_state", ["state"], "x", "rng_state is not a valid PCG64 state"
    yield "rng_state", ["state", "state"], -1, "rng_state is not a valid PCG64 state"
    yield "optimizer", [], "adam", "optimizer must be a JSON object"
    yield from each("optimizer", ["class"], 5, "")
    yield from each("optimizer", ["hyperparameters"], [], {"learning_rate": [0.01]})
    yield from each("optimizer", ["bitmasks"], "no")
    yield from each("optimizer", ["steps"], "2", -1, True)
    yield from each("optimizer", ["slots"], {})
    yield "optimizer", ["slots", 0], 0, "optimizer.slots[0] must be a JSON object"
    yield from each("optimizer", ["slots", 0, "layer"], "0", 3)
    yield from each("optimizer", ["slots", 0, "kind"], "moments")
    yield from each("optimizer", ["slots", 0, "shape"], "6x8", [6, 9])
    yield from each("optimizer", ["slots", 0, "state"], "m", ["m", "m"], ["m", 1], ["keys", "v"])
    yield ("optimizer", ["slots", 1], lambda data: data["slots"][0],
           "optimizer.slots[1] is a second state for layer 0 (weights)")
    yield "extra", [], [1], "extra must be a JSON object (or absent)"
    yield "extra", [], None, "extra must be a JSON object (or absent)"


HEADER_CASES = list(header_cases())


@pytest.mark.parametrize("entry,where,value,message", HEADER_CASES,
                         ids=[f"{e}{w}={'missing' if v is MISSING else v}" for e, w, v, _ in HEADER_CASES])
def test_every_malformed_header_field_is_refused_by_name(entry, where, value, message, saved, tmp_path):
    path, target, target_optimizer = saved
    if entry == "extra":
        save_checkpoint(path, target, target_optimizer, extra={"round": 1})
    bad = rewrite(path, tmp_path / "bad.safetensors", metadata=set_field(entry, where, value))
    before, before_optimizer = fingerprint(target), optimizer_fingerprint(target_optimizer)
    expected = f"malformed header: {re.escape(message)}"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(bad, target, target_optimizer)
    assert fingerprint(target) == before
    assert optimizer_fingerprint(target_optimizer) == before_optimizer
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(bad)  # building a new model refuses it the same way
    with pytest.raises(CheckpointError, match=expected):
        read_checkpoint(bad, tensors=False)  # already when the header is read


@pytest.mark.parametrize("name,value,message", [
    ("learning_rate", -1, "learning_rate must be a positive number, got -1"),
    ("beta1", 2, "beta1 must be a number in [0.0, 1.0], got 2"),
    ("loss", "hinge", "loss must be one of ('cross_entropy', 'quadratic')"),
    ("reduction", "median", "reduction must be one of ('mean', 'sum')"),
    ("bogus", 1, "unexpected keyword argument 'bogus'"),
])
def test_saved_hyperparameters_are_checked_when_the_optimizer_is_built(name, value, message, saved, tmp_path):
    path, target, _ = saved
    bad = rewrite(path, tmp_path / "bad.safetensors", metadata=set_field("optimizer", ["hyperparameters", name], value))
    with pytest.raises(CheckpointError, match=re.escape(message)):
        read_checkpoint(bad).build_optimizer(target)
    optimizer = read_checkpoint(path).build_optimizer(target)
    assert optimizer.reduction == "mean" and optimizer.steps == 2


@pytest.mark.parametrize("where,value,message", [
    ([], "layers", "layers must be a list"),
    ([1], 5, "layers[1] must be a JSON object"),
    ([1, "size"], MISSING, "layers[1].size is missing"),
    ([1, "size"], True, "layers[1].size must be a positive integer, got true"),
    ([1, "input_size"], "8", "layers[1].input_size must be a positive integer"),
    ([1, "input_size"], 0, "layers[1].input_size must be a positive integer"),
    ([1, "colour"], "blue", "layers[1] has unexpected key(s) ['colour']"),
])
def test_malformed_sparse_parameter_headers_are_refused_by_name(where, value, message, tmp_path):
    model = make_model("dense")
    saver = ModelSaver(model)
    saver.store_sparse_parameters()
    path = saver.pickle_sparse_parameters(tmp_path / "selected.safetensors")
    bad = rewrite(path, tmp_path / "bad.safetensors", metadata=set_field("layers", where, value))
    before = fingerprint(model)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        saver.load_sparse_parameters(bad)
    assert fingerprint(model) == before


def test_models_of_another_architecture_are_refused_untouched(saved):
    path, _, _ = saved
    for other in (make_model("dense", seed=2), make_model("mixed", "float32", seed=2),
                  make_model("mixed", seed=2, sizes=[6, 9, 5, 3]), make_model("mixed", seed=2, dropout=0.5)):
        before = fingerprint(other)
        with pytest.raises(CheckpointError, match="does not fit the model"):
            load_checkpoint(path, other)
        assert fingerprint(other) == before


def test_optimizer_mismatches_are_refused_untouched(saved, tmp_path):
    path, target, target_optimizer = saved
    before = fingerprint(target)
    with pytest.raises(CheckpointError, match="holds the state of a AdamOptimizer, the optimizer given is a "
                                              "SGDOptimizer"):
        load_checkpoint(path, target, sa.SGDOptimizer(target, 0.1, momentum=0.5))
    plain = tmp_path / "plain.safetensors"
    save_checkpoint(plain, make_model("mixed"))
    with pytest.raises(CheckpointError, match="holds no optimizer state"):
        load_checkpoint(plain, target, target_optimizer)
    assert fingerprint(target) == before
    with pytest.raises(ValueError, match="optimizer must belong to the model"):
        load_checkpoint(path, make_model("mixed"), target_optimizer)


def test_sparse_parameter_files_are_not_checkpoints(tmp_path):
    model = make_model("dense")
    saver = ModelSaver(model)
    saver.store_sparse_parameters()
    saver.pickle_sparse_parameters(tmp_path / "selected.safetensors")
    with pytest.raises(CheckpointError, match="read it with ModelSaver.load_sparse_parameters"):
        read_checkpoint(tmp_path / "selected.safetensors")
    save_checkpoint(tmp_path / "model.safetensors", model)
    with pytest.raises(CheckpointError, match="read it with load_checkpoint"):
        saver.load_sparse_parameters(tmp_path / "model.safetensors")


def test_the_modules_never_unpickle():
    for module in (_checkpoint, _description, _safetensors, _saver):
        source = Path(module.__file__).read_text()
        assert "import pickle" not in source and "np.load(" not in source and "allow_pickle" not in source


# --------------------------------------------------------------------- atomic writes
# (failed writes and file modes: tests/test_atomic.py)


def test_new_files_and_overwrites(tmp_path):
    path = tmp_path / "m.safetensors"
    first, second = make_model("dense", seed=1), make_model("dense", seed=2)
    save_checkpoint(path, first)
    save_checkpoint(path, second)
    assert fingerprint(load_checkpoint(path)) == fingerprint(second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    with pytest.raises(TypeError, match="extra must be JSON-serialisable"):
        save_checkpoint(path, first, extra={"model": first})
    with pytest.raises(TypeError, match="extra must be a dict"):
        save_checkpoint(path, first, extra=[1])
    assert fingerprint(load_checkpoint(path)) == fingerprint(second)


# ------------------------------------------------------------------------ ModelSaver
@pytest.mark.parametrize("kind", ["dense", "sparse", "mixed"])
def test_store_and_restore_model(kind):
    model = make_model(kind)
    optimizer = sa.AdamOptimizer(model, 0.05)
    saver = model_saver(model)
    snapshot = fingerprint(model)
    for _ in range(2):  # twice: restoring must not hand the snapshot's arrays to the model
        train(optimizer, 2)
        assert fingerprint(model) != snapshot
        saver.restore_model()
        assert fingerprint(model) == snapshot
    train(optimizer, 1)
    saver.store_model()
    stored = fingerprint(model)
    train(optimizer, 1)
    saver.restore_model()
    assert fingerprint(model) == stored


def test_restore_model_and_restore_full_model_undo_convert_to_sparse(rng):
    x = rng.random((5, 6))
    model = make_model("dense")
    saver = ModelSaver(model)
    snapshot, outputs = fingerprint(model), blob(model.outputs(x))
    for restore in (saver.restore_model, saver.restore_full_model):
        model.convert_to_sparse()
        assert model.layer_type == "Sparse"
        restore()
        assert model.layer_type == "Full"
        assert fingerprint(model) == snapshot and blob(model.outputs(x)) == outputs
    mixed = make_model("mixed")  # a snapshot with a sparse layer: restore_model keeps its kinds
    saver = ModelSaver(mixed)
    mixed_snapshot, mixed_outputs = fingerprint(mixed), mixed.outputs(x)
    mixed.convert_to_dense()
    saver.restore_model()
    assert fingerprint(mixed) == mixed_snapshot
    saver.restore_full_model()  # ... restore_full_model makes it dense, pattern as prune mask
    assert mixed.layer_type == "Full"
    layer = mixed.layers[1]
    assert np.array_equal(layer.prune_mask, layer.weights != 0)
    np.testing.assert_allclose(mixed.outputs(x), mixed_outputs, rtol=1e-12)


@pytest.mark.parametrize("head_kind", ["dense", "sparse"])
def test_transfer_partial_model(head_kind, rng):
    source = make_model("mixed")
    saver = ModelSaver(source)
    new = build_model([6, 8, 5, 4], ACTIVATIONS, sparse=[False, False, head_kind == "sparse"], seed=3)
    expected_rng = np.random.default_rng()
    expected_rng.bit_generator.state = new.rng.bit_generator.state
    assert saver.transfer_partial_model(new) is new
    assert fingerprint(new)[:2] == fingerprint(source)[:2]  # copied bit for bit, kinds and masks included
    head = new.layers[-1]
    assert (head.input_size, head.size, head.is_sparse) == (5, 4, head_kind == "sparse")
    expected = expected_rng.standard_normal((5, 4)) * np.sqrt(3 / (5 + 4))
    np.testing.assert_array_equal(head.dense_weights(), expected)
    np.testing.assert_array_equal(head.biases, np.full(4, 0.1))
    assert new.outputs(rng.random((2, 6))).shape == (2, 4)
    saver.transfer_partial_model(new, output_classes=7, bias_constant=0.5)
    assert (new.layers[-1].size, new.num_classes, new.layers[-1].is_sparse) == (7, 7, head_kind == "sparse")
    np.testing.assert_array_equal(new.layers[-1].biases, np.full(7, 0.5))
    assert new.outputs(rng.random((2, 6))).shape == (2, 7)


def test_transfer_partial_model_checks_shapes_first():
    saver = ModelSaver(make_model("dense"))
    for sizes in ([6, 9, 5, 3], [6, 8, 4, 3]):
        other = build_model(sizes, ACTIVATIONS, seed=3)
        before = fingerprint(other)
        with pytest.raises(ValueError, match=r"layer \d: the snapshot's weights are"):
            saver.transfer_partial_model(other)
        assert fingerprint(other) == before
    other = build_model([6, 8, 3], ["relu", "linear"])
    with pytest.raises(ValueError, match="must have 3 layers"):
        saver.transfer_partial_model(other)
    with pytest.raises(ValueError, match="output_classes must be a positive integer"):
        saver.transfer_partial_model(build_model(SIZES, ACTIVATIONS), output_classes=0)


def select(model, seed=11):
    """Training masks on layers 0 and 2; layer 1 has none."""
    masks = np.random.default_rng(seed)
    model.layers[1].training_mask = None
    for i in (0, 2):
        layer = model.layers[i]
        layer.training_mask = masks.random(layer.values.shape) < 0.4
    return [None if layer.training_mask is None else np.array(layer.training_mask) for layer in model.layers]


@pytest.mark.parametrize("kind", ["dense", "sparse", "mixed"])
def test_restore_sparse_parameters_writes_back_exactly_the_selection(kind):
    model = make_model(kind)
    masks = select(model)
    saver = ModelSaver(model)
    with pytest.raises(RuntimeError, match="store_sparse_parameters"):
        saver.restore_sparse_parameters()
    stored = [(np.array(layer.values), np.array(layer.biases)) for layer in model.layers]
    assert saver.store_sparse_parameters() == sum(int(m.sum()) for m in masks if m is not None)
    train(sa.AdamOptimizer(model, 0.05), 3)  # "forget": every weight moves
    moved = [(np.array(layer.values), np.array(layer.biases)) for layer in model.layers]
    saver.restore_sparse_parameters()
    for layer, mask, (old, old_b), (new, new_b) in zip(model.layers, masks, stored, moved):
        values = np.asarray(layer.values)
        if mask is None:  # skipped, not crashed on
            assert blob(values) == blob(new) and blob(layer.biases) == blob(new_b)
            continue
        assert blob(values[mask]) == blob(old[mask])
        assert blob(values[~mask]) == blob(new[~mask])  # every other weight untouched
        assert blob(layer.biases) == blob(old_b)
        assert (new[mask] != old[mask]).any()


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_sparse_parameter_files_set_values_biases_and_masks(kind, tmp_path):
    path = tmp_path / "selected.safetensors"
    model = make_model(kind)
    masks = select(model)
    saver = ModelSaver(model)
    saver.store_sparse_parameters()
    saver.pickle_sparse_parameters(path)
    target = make_model(kind, seed=4)
    if kind == "dense":
        target.layers[0].prune_mask = None  # (pruned weights would stay zero; tested below)
    target.layers[1].training_mask = np.ones(target.layers[1].values.shape, dtype=bool)
    if kind == "sparse":  # the same pattern, so that every selected weight exists in the target
        for i, layer in enumerate(target.layers):
            layer.set_parameters(model.layers[i].to_scipy() * 0.5, layer.biases)
    before = [np.array(layer.values) for layer in target.layers]
    model_saver(target).load_sparse_parameters(path)
    for layer, source, mask, old in zip(target.layers, model.layers, masks, before):
        values = np.asarray(layer.values)
        if mask is None:
            assert layer.training_mask is None and blob(values) == blob(old)
            continue
        assert np.array_equal(layer.training_mask, mask)
        assert blob(values[mask]) == blob(np.asarray(source.values)[mask])
        assert blob(values[~mask]) == blob(old[~mask])
        assert blob(layer.biases) == blob(source.biases)


def test_sparse_parameter_files_that_do_not_fit_change_nothing(tmp_path):
    path = tmp_path / "selected.safetensors"
    model = make_model("sparse")
    select(model)
    saver = ModelSaver(model)
    saver.store_sparse_parameters()
    saver.pickle_sparse_parameters(path)
    for target in (make_model("sparse", seed=4),  # another pattern: selected weights missing
                   make_model("dense", sizes=[6, 8, 5, 4])):
        before = fingerprint(target)
        with pytest.raises(CheckpointError, match="do not fit the model"):
            ModelSaver(target).load_sparse_parameters(path)
        assert fingerprint(target) == before
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(path.read_bytes()[:-9])
    with pytest.raises(CheckpointError, match="cut short"):
        ModelSaver(model).load_sparse_parameters(truncated)
    model.layers[0].keep_only(np.zeros(model.layers[0].nnz, dtype=bool))  # pruned since they were stored
    with pytest.raises(ValueError, match=r"layer 0: \d+ of the \d+ selected weights are not stored"):
        saver.restore_sparse_parameters()


def test_pruned_dense_weights_stay_pruned_on_restore():
    model = make_model("dense")
    masks = select(model)
    saver = ModelSaver(model)
    saver.store_sparse_parameters()
    layer = model.layers[0]
    keep = np.asarray(layer.prune_mask).copy()
    keep[masks[0] & keep] = np.arange((masks[0] & keep).sum()) % 2 == 0  # prune half the selected weights
    layer.keep_only(keep)
    before = np.array(layer.values)
    saver.restore_sparse_parameters()
    values = np.asarray(layer.values)
    assert not values[~keep].any()
    assert blob(values[keep & masks[0]]) == blob(saver._sparse_parameters[0]["values"][keep[masks[0]]])
    assert blob(values[~masks[0]]) == blob(before[~masks[0]])


def test_whole_model_files_with_the_original_names(tmp_path):
    path = tmp_path / "model.safetensors"
    model = make_model("mixed")
    saver = ModelSaver(model)
    optimizer = sa.AdamOptimizer(model, 0.01)
    train(optimizer, 1)
    saver.pickle_model(path)
    saved = fingerprint(model)
    train(optimizer, 2)
    assert saver.load_model(path) is model
    assert fingerprint(model) == saved
    saver.save(path, optimizer, extra={"round": 2})
    saved_optimizer = optimizer_fingerprint(optimizer)
    train(optimizer, 2)
    saver.load(path, optimizer)
    assert optimizer_fingerprint(optimizer) == saved_optimizer
    assert read_checkpoint(path, tensors=False).extra == {"round": 2}
