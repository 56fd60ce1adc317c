"""TensorBoard event files written without TensorFlow or PyTorch, read back by our reader and by TensorBoard's."""

import io
import math

import numpy as np
import pytest

import sparana as sa
from conftest import build_model
from sparana import cluster
from sparana.io._tensorboard import (ScalarWriter, crc32c, decode_event, encode_event, frame, masked_crc32c,
                                  read_events, read_scalars, records)
from sparana.data import MnistData


def test_crc32c_matches_the_standard_check_values():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720, B.4: 32 bytes of zeros
    assert masked_crc32c(b"") == 0xA282EAD8  # a CRC of 0 masks to the constant alone


def test_records_round_trip_and_damage_is_refused():
    data = [b"", b"one", bytes(range(256)) * 3]
    stream = b"".join(frame(d) for d in data)
    assert list(records(io.BytesIO(stream))) == data
    for position, message in ((3, "length fails its CRC"), (14, "data fails its CRC")):
        damaged = bytearray(stream)
        damaged[len(frame(b"")) + position] ^= 1  # a bit of the second record
        with pytest.raises(ValueError, match=message):
            list(records(io.BytesIO(bytes(damaged))))
    with pytest.raises(ValueError, match="truncated"):
        list(records(io.BytesIO(stream[:-2])))


def test_events_encode_and_decode():
    event = decode_event(encode_event(1234.5, step=7, scalars={"a/b": 0.25, "c": -3.0}))
    assert event == {"wall_time": 1234.5, "step": 7, "file_version": None, "scalars": {"a/b": 0.25, "c": -3.0}}
    assert decode_event(encode_event(1.0, file_version="brain.Event:2"))["file_version"] == "brain.Event:2"
    assert decode_event(encode_event(1.0, step=-2))["step"] == -2  # int64 as its two's complement
    assert decode_event(encode_event(1.0, step=2**40))["step"] == 2**40


def test_a_writer_makes_a_run_that_tensorboard_reads(tmp_path):
    writer = ScalarWriter(tmp_path / "run")
    for step in range(3):
        writer.add_scalars({"loss": 1.0 / (step + 1), "accuracy": 0.1 * step, "skipped": None}, step)
    writer.add_scalar("extra", math.pi, 5)
    assert "tfevents" in writer.path.name
    events = read_events(writer.path)
    assert events[0]["file_version"] == "brain.Event:2" and not events[0]["scalars"]
    scalars = read_scalars(tmp_path)["run"]
    assert sorted(scalars) == ["accuracy", "extra", "loss"]
    assert [(s, v) for s, v, _ in scalars["loss"]] == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3, rel=1e-7))]
    assert scalars["extra"][0][1] == pytest.approx(math.pi, rel=1e-7)  # float32, as TensorBoard stores them

    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    board = accumulator.EventAccumulator(str(tmp_path / "run"))
    board.Reload()
    assert sorted(board.Tags()["scalars"]) == ["accuracy", "extra", "loss"]
    assert [(e.step, e.value) for e in board.Scalars("accuracy")] == [(s, v) for s, v, _ in scalars["accuracy"]]


@pytest.fixture(scope="module")
def small():
    mnist = sa.load_mnist()
    return MnistData(mnist.train.slice(0, 1200), mnist.test.slice(0, 300))


def tiny_model():
    return build_model([784, 24, 16, 10], ["relu", "relu", "linear"])


def assert_rounds_on_the_board(runs, stage, result, workers):
    """Every figure of every round in the stage's driver run; every worker's figures in its own run."""
    driver = runs[f"{stage}/driver"]
    for key in result.rounds[0]:
        if key == "round":
            continue
        logged = [(step, value) for step, value, _ in driver[f"driver/{key}"]]
        expected = [(r["round"], pytest.approx(r[key], rel=1e-6, abs=1e-30)) for r in result.rounds]
        assert logged == expected, key
    for worker in range(workers):
        figures = runs[f"{stage}/worker-{worker}"]
        assert sorted(figures) == ["worker/accuracy", "worker/loss", "worker/samples_per_second", "worker/seconds"]
        assert [step for step, _, _ in figures["worker/loss"]] == [r["round"] for r in result.rounds]
        assert all(np.isfinite(value) and value > 0 for _, value, _ in figures["worker/samples_per_second"])


def test_an_experiment_writes_every_round_to_tensorboard(small, tmp_path):
    log_dir = tmp_path / "results" / "tensorboard"
    pool = cluster.local_workers(2, seed=3, data=small)
    pruning = cluster.Pruning(targets={1: 0.5, 2: 0.8}, convert_at=0.8)
    mixed = cluster.train_and_mix(tiny_model(), pool, 3, 3, prune=pruning, test=small.test, progress=False,
                                  name="prune and mix", seed=3, settings={"batch_size": 16}, log_dir=log_dir)
    melded = cluster.vulcanize(tiny_model(), pool, None, 2, 3, test=small.test, progress=False, seed=3,
                               settings={"batch_size": 16}, log_dir=log_dir)
    runs = read_scalars(tmp_path / "results")  # as `tensorboard --logdir results/` finds them
    assert sorted(runs) == ["tensorboard/prune_and_mix/driver", "tensorboard/prune_and_mix/worker-0",
                            "tensorboard/prune_and_mix/worker-1", "tensorboard/vulcanize/driver",
                            "tensorboard/vulcanize/worker-0", "tensorboard/vulcanize/worker-1"]
    runs = read_scalars(log_dir)
    assert_rounds_on_the_board(runs, "prune_and_mix", mixed, 2)
    assert_rounds_on_the_board(runs, "vulcanize", melded, 2)
    accuracy = [value for _, value, _ in runs["prune_and_mix/driver"]["driver/accuracy"]]
    assert accuracy == [pytest.approx(r["accuracy"], rel=1e-6) for r in mixed.rounds]
    sparsity = [value for _, value, _ in runs["prune_and_mix/driver"]["driver/sparsity"]]
    assert sparsity == [0.0, pytest.approx(0.5, abs=1e-3), pytest.approx(0.8, abs=1e-3)]

    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    board = accumulator.EventAccumulator(str(log_dir / "prune_and_mix" / "driver"))
    board.Reload()
    assert [(e.step, e.value) for e in board.Scalars("driver/accuracy")] == \
        [(r["round"], pytest.approx(r["accuracy"], rel=1e-6)) for r in mixed.rounds]


def test_a_resumed_experiment_adds_the_rounds_it_runs(small, tmp_path):
    log_dir, path = tmp_path / "tensorboard", tmp_path / "mix.safetensors"
    options = dict(test=small.test, progress=False, name="mix", seed=1, settings={"batch_size": 16},
                   checkpoint=path, log_dir=log_dir)
    cluster.train_and_mix(tiny_model(), cluster.local_workers(2, seed=1, data=small), 2, 2, **options)
    resumed = cluster.train_and_mix(tiny_model(), cluster.local_workers(2, seed=1, data=small), 4, 2, resume=path,
                                    **options)
    logged = read_scalars(log_dir)["mix/driver"]["driver/accuracy"]
    assert [step for step, _, _ in logged] == [0, 1, 2, 3]  # two event files, read in the order they were made
    assert [value for _, value, _ in logged] == [pytest.approx(r["accuracy"], rel=1e-6) for r in resumed.rounds]
    assert len(list((log_dir / "mix" / "driver").glob("*tfevents*"))) == 2
