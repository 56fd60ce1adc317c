"""The loaders: epoch semantics, seeds, conversions, validation, split and distributed loaders."""

import numpy as np
import pytest

from sparana.data import (
    DistributedLoader,
    Loader,
    SplitLoader,
    distributed_loader,
    load_mnist,
    loader,
    split_loader,
    to_float,
)


@pytest.fixture(scope="session")
def mnist():
    """Real MNIST, fetched once per machine into the default cache."""
    return load_mnist()


def indexed(n, labels=None, classes=10, seed=0):
    """Training data whose single feature is the row number, so batches reveal their rows."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n) if labels is None else np.asarray(labels)
    data = np.arange(n, dtype=np.float64)[:, None]
    test = np.arange(1000, 1000 + 2 * classes, dtype=np.float64)[:, None]
    return data, labels, test, np.arange(2 * classes) % classes


def rows(batch):
    return batch[0][:, 0].astype(int)


def labels_of(batch):
    return np.argmax(batch[1], axis=1)


# --- Loader ---------------------------------------------------------------------------------

def test_epoch_semantics_mnist_size():
    l = Loader(*indexed(60000), seed=0)
    seen = np.concatenate([rows(l.minibatch(128)) for _ in range(468)])
    assert l.epochs == 0 and l.minibatches == 468
    assert len(np.unique(seen)) == 468 * 128  # every sample at most once per epoch
    nxt = rows(l.minibatch(128))
    assert l.epochs == 1 and l.minibatches == 469  # counted when the next epoch begins
    second = np.concatenate([nxt] + [rows(l.minibatch(128)) for _ in range(467)])
    assert len(np.unique(second)) == 468 * 128 and l.epochs == 1
    assert not np.array_equal(seen, second)


def test_mnist_batches(mnist):
    l = loader.from_mnist(mnist, seed=1)
    x, y = l.minibatch(128)
    assert x.shape == (128, 784) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert y.shape == (128, 10) and y.dtype == np.float32 and (y.sum(axis=1) == 1).all()
    assert l.training_size == 60000 and l.num_classes == 10
    assert np.shares_memory(l._x, mnist.train.images)  # the dataset is referenced, not copied
    test = l.test_data()
    np.testing.assert_array_equal(test, to_float(mnist.test.images))
    assert l.test_data() is test and not test.flags.writeable
    np.testing.assert_array_equal(l.test_labels().argmax(axis=1), mnist.test.labels)
    x[:] = 0  # batches belong to the caller
    assert l.minibatch(128)[0].any()


def test_from_mnist_with_shard(mnist):
    shard = mnist.train.shard(4)[2]
    l = Loader.from_mnist(shard, test=mnist.test, seed=0, one_hot=False)
    assert l.training_size == 15000
    x, y = l.minibatch(10)
    assert y.dtype == np.int64 and np.isin(y, np.arange(10)).all()
    with pytest.raises(TypeError, match="test="):
        Loader.from_mnist(shard)


def test_seeded_repeatability():
    data = indexed(500)
    a, b, c = Loader(*data, seed=7), Loader(*data, seed=7), Loader(*data, seed=8)
    batches_a = [rows(a.minibatch(32)) for _ in range(40)]
    assert all(np.array_equal(x, rows(b.minibatch(32))) for x in batches_a)
    assert not all(np.array_equal(x, rows(c.minibatch(32))) for x in batches_a)
    d = Loader(*data, seed=np.random.SeedSequence(7))
    e = Loader(*data, seed=np.random.default_rng(7))
    assert rows(d.minibatch(32)).shape == rows(e.minibatch(32)).shape == (32,)


def test_random_minibatch_does_not_disturb_epochs():
    data = indexed(100)
    plain, mixed = Loader(*data, seed=3), Loader(*data, seed=3)
    for step in range(25):  # crosses several epoch boundaries (3 batches of 30 per epoch)
        r = rows(mixed.random_minibatch(40))
        assert len(np.unique(r)) == 40
        np.testing.assert_array_equal(rows(plain.minibatch(30)), rows(mixed.minibatch(30)))
    assert (mixed.epochs, mixed.minibatches) == (plain.epochs, plain.minibatches) == (8, 25)


@pytest.mark.parametrize("dtype, out", [(np.float64, np.float64), (np.float32, np.float32),
                                        (np.float16, np.float32), (np.uint8, np.float32)])
def test_data_dtypes(dtype, out):
    data = np.arange(40, dtype=dtype).reshape(10, 2, 2)  # trailing dims are flattened
    l = Loader(data, np.arange(10) % 3, data[:4], np.arange(4) % 3, seed=0)
    x, _ = l.random_minibatch(5)
    assert x.dtype == out and x.shape == (5, 4) and l.test_data().dtype == out
    if dtype == np.uint8:
        assert x.max() <= 40 / 255


def test_one_hot_labels_in_and_ids_out():
    eye = np.eye(4)
    labels = np.arange(12) % 4
    l = Loader(np.ones((12, 3)), eye[labels], np.ones((4, 3)), eye[:4], seed=0, one_hot=False)
    x, y = l.minibatch(12)
    assert y.dtype == np.int64 and sorted(y.tolist()) == sorted(labels.tolist())
    assert l.num_classes == 4 and l.test_labels().tolist() == [0, 1, 2, 3]
    l2 = Loader(np.ones((12, 3)), labels, np.ones((4, 3)), labels[:4], num_classes=6)
    assert l2.minibatch(3)[1].shape == (3, 6)


@pytest.mark.parametrize("change, error, text", [
    (dict(training_labels=np.zeros(9, int)), ValueError,
     "holds 9 labels but training_data holds 10"),
    (dict(test_data=np.ones((4, 5))), ValueError, "3 features .* test_data has 5"),
    (dict(training_labels=np.arange(10)), ValueError, r"class ids 0..3, found 9"),
    (dict(training_labels=-np.ones(10, int)), ValueError, ">= 0"),
    (dict(training_labels=np.zeros(10)), TypeError, "integer class ids"),
    (dict(training_labels=np.ones((10, 4))), ValueError, "one-hot rows"),
    (dict(training_data=np.full((10, 3), np.nan)), ValueError, "NaN"),
    (dict(training_data=np.ones((10, 3), np.int64)), TypeError, "uint8 images or floating"),
    (dict(training_data=np.ones(10)), ValueError, r"shape \(10,\)"),
    (dict(num_classes=0), ValueError, "num_classes"),
])
def test_validation(change, error, text):
    args = dict(training_data=np.ones((10, 3)), training_labels=np.arange(10) % 4,
                test_data=np.ones((4, 3)), test_labels=np.arange(4), num_classes=4)
    args.update(change)
    with pytest.raises(error, match=text):
        Loader(**args)


def test_batch_size_validation():
    l = Loader(*indexed(50), seed=0)
    for bad, error, text in [(0, ValueError, "between 1 and 50.*got 0"),
                             (51, ValueError, "holds 50 samples"),
                             (2.0, TypeError, "int"), (True, TypeError, "int")]:
        with pytest.raises(error, match=text):
            l.minibatch(bad)
        with pytest.raises(error, match=text):
            l.random_minibatch(bad)
    assert l.minibatches == 0


def test_print_stats(capsys):
    l = Loader(*indexed(20), seed=0)
    for _ in range(3):
        l.minibatch(8)
    l.print_stats()
    assert capsys.readouterr().out == "Epochs: 1\nMinibatches: 3\n"


# --- SplitLoader ----------------------------------------------------------------------------

# 103 samples over 5 classes; removing [3, 4] leaves 64 samples, removed sets of 23 and 16.
COUNTS = [22, 21, 21, 23, 16]
SPLIT_LABELS = np.random.default_rng(5).permutation(np.repeat(np.arange(5), COUNTS))


def make_split(remove=(3, 4), add=2, **kw):
    data, labels, test, test_labels = indexed(103, SPLIT_LABELS, classes=5)
    return split_loader(data, labels, test, test_labels, list(remove), add, seed=11, **kw)


def test_split_widths_everywhere():
    s = make_split()
    assert s.label_width == 5 and s.kept_classes.tolist() == [0, 1, 2]
    assert s.minibatch(10)[1].shape == (10, 5)
    assert s.random_minibatch(10)[1].shape == (10, 5)
    assert s.test_labels().shape == (6, 5) and s.test_data().shape == (6, 1)
    assert s.removed_minibatch(4, 3)[1].shape == (4, 5)
    assert s.removed_random_minibatch(4, 4)[1].shape == (4, 5)
    assert s.mixed_minibatch(10, 3, 0.3)[1].shape == (10, 5)
    assert s.removed_test_set(4)[1].shape == (2, 5)
    assert make_split(add=0).minibatch(3)[1].shape == (3, 3)


def test_split_main_set_and_relabelling():
    s = make_split(remove=(1, 3), add=1)
    assert s.kept_classes.tolist() == [0, 2, 4] and s.label_width == 4
    with pytest.raises(ValueError, match="holds 59 samples"):  # 22 + 21 + 16 kept
        s.minibatch(60)
    batch = s.minibatch(59)
    original = SPLIT_LABELS[rows(batch)]
    assert sorted(rows(batch).tolist()) == np.flatnonzero(np.isin(SPLIT_LABELS, [0, 2, 4])).tolist()
    np.testing.assert_array_equal(s.kept_classes[labels_of(batch)], original)
    assert (batch[1][:, 3] == 0).all()  # the added column stays empty
    test_original = np.arange(10) % 5
    kept_test = test_original[np.isin(test_original, [0, 2, 4])]
    np.testing.assert_array_equal(s.kept_classes[s.test_labels().argmax(axis=1)], kept_test)
    ids = make_split(remove=(1, 3), add=1, one_hot=False)
    assert ids.minibatch(5)[1].dtype == np.int64 and ids.test_labels().max() == 2


def test_split_counts_from_spec():
    s = make_split()
    assert s.minibatch(64)[0].shape == (64, 1)
    assert [len(s.removed_test_set(c)[0]) for c in (3, 4)] == [2, 2]
    with pytest.raises(ValueError, match="holds 23 samples"):
        s.removed_minibatch(24, 3)
    with pytest.raises(ValueError, match="holds 16 samples"):
        s.removed_minibatch(17, 4)


def test_removed_minibatch_epochs_single():
    s = make_split()
    main_before = (s.epochs, s.minibatches)
    epoch = np.concatenate([rows(s.removed_minibatch(5, 4)) for _ in range(3)])  # 16 // 5 = 3
    assert sorted(set(epoch)) == sorted(epoch) and (SPLIT_LABELS[epoch] == 4).all()
    assert s.removed_epochs == {3: 0, 4: 0} and s.removed_minibatches == {3: 0, 4: 3}
    x, y = s.removed_minibatch(5, 4)
    assert s.removed_epochs == {3: 0, 4: 1} and (labels_of((x, y)) == 4).all()  # column -1
    assert (s.epochs, s.minibatches) == main_before
    y = s.removed_minibatch(5, 3, label_index=0)[1]
    assert (y.argmax(axis=1) == 0).all() and s.removed_minibatches[3] == 1


def test_removed_does_not_disturb_main_order():
    a, b = make_split(), make_split()
    for _ in range(10):
        b.removed_minibatch(7, 3)
        b.removed_random_minibatch(7, 4)
        np.testing.assert_array_equal(rows(a.minibatch(20)), rows(b.minibatch(20)))


def test_removed_minibatch_list_wraps_each_class():
    s = make_split()
    for call in range(10):
        x, y = s.removed_minibatch(11, [3, 4], [-2, -1])
        got = rows((x, y))
        assert len(got) == 11  # 6 of class 3, 5 of class 4, never short
        assert (SPLIT_LABELS[got[:6]] == 3).all() and (SPLIT_LABELS[got[6:]] == 4).all()
        assert (y[:6, 3] == 1).all() and (y[6:, 4] == 1).all()
    # class 3: 23 // 6 = 3 batches per epoch; class 4: 16 // 5 = 3 batches per epoch
    assert s.removed_minibatches == {3: 10, 4: 10}
    assert s.removed_epochs == {3: 3, 4: 3}
    with pytest.raises(TypeError, match="list of as many"):
        s.removed_minibatch(4, [3, 4], -1)
    with pytest.raises(ValueError, match="not a removed class"):
        s.removed_minibatch(4, 2)
    with pytest.raises(ValueError, match="label_index must be between -5 and 4"):
        s.removed_minibatch(4, 3, label_index=5)
    with pytest.raises(ValueError, match="one sample or more for each of 2"):
        s.removed_minibatch(1, [3, 4], [0, 1])


def test_failing_calls_change_no_counter():
    s = make_split()
    with pytest.raises(ValueError, match="class 4's training set holds 16"):
        s.removed_minibatch(40, [3, 4], [0, 1])  # 20 + 20: class 3 could, class 4 cannot
    with pytest.raises(ValueError, match="kept classes' training set holds 64"):
        s.mixed_minibatch(80, 3, 0.1)  # 72 main samples wanted
    assert s.removed_minibatches == {3: 0, 4: 0} and s.minibatches == 0


def test_removed_random_minibatch():
    s = make_split()
    x, y = s.removed_random_minibatch(16, 4, label_index=3)
    assert sorted(rows((x, y))) == np.flatnonzero(SPLIT_LABELS == 4).tolist()
    assert (labels_of((x, y)) == 3).all() and s.removed_minibatches == {3: 0, 4: 0}
    x, y = s.removed_random_minibatch(6, [3, 4], [3, 4])
    assert len(x) == 6


@pytest.mark.parametrize("size, ratio, n_removed", [(10, 0.3, 3), (10, 0.7, 7), (10, 0.25, 3),
                                                     (7, 0.0, 0), (7, 1.0, 7), (80, 0.1, 8)])
def test_mixed_minibatch_sizes(size, ratio, n_removed):
    s = make_split(remove=(4,), add=0)  # main set: 87 samples, class 4: 16
    x, y = s.mixed_minibatch(size, 4, ratio)
    assert len(x) == size and (SPLIT_LABELS[rows((x, y))] == 4).sum() == n_removed
    assert (y.argmax(axis=1)[SPLIT_LABELS[rows((x, y))] == 4] == 3).all()  # last column
    assert s.minibatches == (size > n_removed) and s.removed_minibatches[4] == (n_removed > 0)


def test_mixed_minibatch_is_shuffled():
    s = make_split(remove=(4,), add=1)
    positions = set()
    for _ in range(20):
        x, y = s.mixed_minibatch(10, 4, 0.3)
        positions.update(np.flatnonzero(SPLIT_LABELS[rows((x, y))] == 4).tolist())
    assert len(positions) > 5
    with pytest.raises(ValueError, match="removed_ratio"):
        s.mixed_minibatch(10, 4, 1.5)


def test_removed_test_set():
    s = make_split()
    x, y = s.removed_test_set([3, 4], [-2, -1])
    assert rows((x, y)).tolist() == [1003, 1008, 1004, 1009]
    assert y.argmax(axis=1).tolist() == [3, 3, 4, 4]


def test_split_validation():
    data = indexed(103, SPLIT_LABELS, classes=5)
    for remove, error, text in [(3, TypeError, r"use \[3\]"), ([3, 3], ValueError, "distinct"),
                                ([0, 1, 2, 3, 4], ValueError, "at least one"),
                                ([5], ValueError, "between 0 and 4")]:
        with pytest.raises(error, match=text):
            SplitLoader(*data, remove, 0)
    with pytest.raises(ValueError, match="add_classes"):
        SplitLoader(*data, [3], -1)


def test_split_print_stats(capsys):
    s = make_split()
    s.minibatch(10)
    s.removed_minibatch(5, 4)
    s.print_stats()
    assert capsys.readouterr().out.splitlines() == [
        "Epochs: 0", "Minibatches: 1",
        "Removed class 3: Epochs: 0 Minibatches: 0", "Removed class 4: Epochs: 0 Minibatches: 1"]


# --- DistributedLoader ---------------------------------------------------------------------

def test_distributed_shards_disjoint_covering():
    d = distributed_loader(*indexed(103), 4, seed=2)
    shards = [d.shard_indices(i) for i in range(d.num_subsets)]
    assert [len(s) for s in shards] == [26, 26, 26, 25]
    assert sorted(np.concatenate(shards).tolist()) == list(range(103))
    for i, shard in enumerate(shards):
        got = np.concatenate([rows(d.minibatch(5, i)) for _ in range(5)])
        assert np.isin(got, shard).all() and len(set(got)) == 25
    assert d.minibatches == [5, 5, 5, 5] and d.epochs == [0, 0, 0, 0]
    d.minibatch(5, 3)
    assert d.epochs == [0, 0, 0, 1]
    same = DistributedLoader(*indexed(103), 4, seed=2)
    assert all(np.array_equal(same.shard_indices(i), shards[i]) for i in range(4))


def test_distributed_random_minibatch():
    d = DistributedLoader(*indexed(103), 4, seed=2)
    whole = rows(d.random_minibatch(103))
    assert sorted(whole.tolist()) == list(range(103))
    part = rows(d.random_minibatch(20, 1))
    assert np.isin(part, d.shard_indices(1)).all() and len(set(part)) == 20
    assert d.minibatches == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="holds 26 samples"):
        d.random_minibatch(27, 0)


def test_combine_subsets():
    d = DistributedLoader(*indexed(103), 4, seed=2)
    before = [d.shard_indices(i) for i in range(4)]
    d.minibatch(5, 1)
    d.minibatch(5, 3)
    assert d.combine_subsets([3, 1]) == 1
    assert d.num_subsets == 3
    np.testing.assert_array_equal(d.shard_indices(0), before[0])
    np.testing.assert_array_equal(d.shard_indices(1), np.sort(np.concatenate(before[1::2])))
    np.testing.assert_array_equal(d.shard_indices(2), before[2])
    assert d.minibatches == [0, 0, 0] and d.epochs == [0, 0, 0]
    assert d.combine_subsets([0, 1, 2]) == 0 and len(d.shard_indices(0)) == 103
    with pytest.raises(ValueError, match="there are 1 shards"):
        d.minibatch(5, 1)
    with pytest.raises(TypeError, match="list"):
        d.combine_subsets(0)


def test_distributed_validation_and_stats(capsys):
    data = indexed(10)
    with pytest.raises(ValueError, match="subsets must be between 1 and 10"):
        DistributedLoader(*data, 11)
    d = DistributedLoader(*data, 2, seed=0)
    d.minibatch(2, 0)
    d.print_stats()
    assert capsys.readouterr().out == "Epochs: [0, 0]\nMinibatches: [1, 0]\n"
    assert d.test_labels().shape == (20, 10)
