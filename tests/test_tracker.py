"""DistanceTracker against a plain per-pair double loop."""

import numpy as np
import pytest

from conftest import build_model
from sparana.compat import distance_tracker
from sparana.nn._tracker import DistanceTracker, class_cosine_distances


def loop_distances(outputs, ids, classes):
    """Mean 1 - cos over every pair of distinct samples, per class pair, zero vectors left out."""
    total = np.zeros((classes, classes))
    count = np.zeros((classes, classes))
    for i in range(len(outputs)):
        for j in range(len(outputs)):
            u, v = outputs[i], outputs[j]
            if i == j or not u.any() or not v.any():
                continue
            total[ids[i], ids[j]] += 1 - u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
            count[ids[i], ids[j]] += 1
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def test_matches_the_double_loop_with_single_samples_zero_vectors_and_empty_classes(rng):
    outputs = rng.standard_normal((15, 6))
    ids = np.array([0, 0, 0, 1, 1, 1, 1, 2, 3, 3, 3, 0, 1, 4, 4])  # class 2 has one sample, class 5 none
    outputs[4] = 0.0  # a zero vector (class 1)
    outputs[13] = 0.0  # class 4 is left with one usable sample
    got = class_cosine_distances(outputs, ids, 6)
    expected = loop_distances(outputs, ids, 6)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    assert np.isnan(got[2, 2]) and np.isnan(got[4, 4]) and np.isnan(got[5]).all()
    assert not np.isnan(got[2, 3]) and not np.isnan(got[0, 0])
    assert np.array_equal(got, got.T, equal_nan=True)


@pytest.mark.parametrize("sparse", [False, True])
def test_checkpoint_records_every_layer_like_the_loop(sparse, rng):
    model = build_model([8, 7, 6, 4], ["relu", "relu", "linear"], sparse=sparse, density=0.6, dtype="float32")
    model.layers[0].biases = -np.abs(model.layers[0].biases)  # so that a zero input gives a zero output
    x = rng.random((20, 8)).astype(np.float32)
    x[3] = 0.0
    labels = rng.integers(0, 4, 20)
    tracker = distance_tracker(model)
    matrices = tracker.checkpoint(x, labels)
    activations = model.activations(x)
    assert not activations[1][3].any()  # the zero vector is really there
    assert len(matrices) == 3 and len(tracker.matrices) == 1
    for m, out in zip(matrices, activations[1:]):
        np.testing.assert_allclose(m, loop_distances(out.astype(np.float64), labels, 4), rtol=1e-9, atol=1e-12)
        assert np.array_equal(m, m.T, equal_nan=True)
    onehot = np.eye(4)[labels]
    for a, b in zip(tracker.checkpoint(x, onehot), matrices):  # one-hot labels give the same matrices
        assert np.array_equal(a, b, equal_nan=True)


def test_dense_and_sparse_models_agree(rng):
    sparse = build_model([8, 7, 4], ["relu", "linear"], sparse=True, density=0.5)
    dense = build_model([8, 7, 4], ["relu", "linear"], sparse=True, density=0.5)
    dense.convert_to_dense()
    x, labels = rng.random((16, 8)), rng.integers(0, 4, 16)
    for a, b in zip(DistanceTracker(sparse).checkpoint(x, labels), DistanceTracker(dense).checkpoint(x, labels)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_summaries_and_class_indices(rng):
    model = build_model([5, 6, 3], ["relu", "linear"])
    tracker = DistanceTracker(model)
    x, labels = rng.random((12, 5)), np.arange(12) % 3
    first = tracker.checkpoint(x, labels)
    second = tracker.checkpoint(x[:6] * 2, labels[:6])
    for got, matrices in zip(tracker.get_cosines(), (first, second)):
        for value, m in zip(got, matrices):
            assert value == pytest.approx(np.mean(m[~np.eye(3, dtype=bool)]))
    assert tracker.get_cosines((2, 0))[1] == [m[2, 0] for m in second]
    assert tracker.get_self_cosines()[0] == [pytest.approx(np.mean(np.diag(m))) for m in first]
    assert tracker.get_self_cosines(0) == [[m[0, 0] for m in first], [m[0, 0] for m in second]]  # bug 45: 0 works
    assert tracker.get_self_cosines(0) != tracker.get_self_cosines()
    with pytest.raises(ValueError, match=r"class indices must be integers in \[0, 3\)"):
        tracker.get_self_cosines(3)
    with pytest.raises(ValueError, match="pair of classes"):
        tracker.get_cosines(1)


def test_plot_writes_a_png(rng, tmp_path):
    model = build_model([5, 6, 4, 3], ["relu", "relu", "linear"])
    tracker = DistanceTracker(model)
    with pytest.raises(ValueError, match="nothing to plot"):
        tracker.plot(tmp_path / "none.png")
    tracker.checkpoint(rng.random((9, 5)), np.array([0, 0, 1, 1, 1, 2, 0, 1, 0]))  # class 2: a NaN diagonal
    path = tracker.plot(tmp_path / "distances.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
