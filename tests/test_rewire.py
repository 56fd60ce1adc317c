"""Dynamic sparse training: SET and RigL rewiring, checked against plain dense computations."""

import numpy as np
import pytest
from conftest import build_model

import sparana as sa
from sparana.kernels import rewiring
from sparana.sparsity._pruning import rewire_fraction

SIZES = [40, 30, 20, 5]


def sparse_model(seed=0, density=0.3, dropout=None, dtype="float64"):
    return build_model(SIZES, ["relu", "relu", "linear"], sparse=True, density=density, seed=seed, dtype=dtype,
                       dropout=dropout)


def batch(n=16, seed=3):
    rng = np.random.default_rng(seed)
    return rng.random((n, SIZES[0])), np.arange(n) % SIZES[-1]


def entries(layer):
    """{flat (n_out, n_in) position: value} of a sparse layer's stored weights."""
    matrix = layer.to_scipy().tocoo()
    return dict(zip((matrix.row * layer.input_size + matrix.col).tolist(), matrix.data.tolist()))


def set_drop_reference(values, fraction):
    """Positions (indices) SET drops: per sign, the round(fraction * n) closest to zero, by a full sort."""
    dropped = []
    for side in (np.flatnonzero(values >= 0), np.flatnonzero(values < 0)):
        order = side[np.argsort(np.abs(values[side]), kind="stable")]
        dropped.extend(order[:int(round(fraction * side.size))].tolist())
    return set(dropped)


def test_set_drops_the_smallest_of_each_sign_and_grows_as_many_new_connections():
    model = sparse_model()
    before = [entries(layer) for layer in model.layers]
    counts = [layer.nnz for layer in model.layers]
    rewirer = sa.Rewirer(model, "SET", fraction=0.25, schedule="constant", seed=1)
    replaced = rewirer.rewire()
    for i, layer in enumerate(model.layers):
        assert layer.nnz == counts[i]  # as many weights as before
        old, new = before[i], entries(layer)
        keys = np.array(list(old))
        values = np.array([old[k] for k in keys])
        dropped = {int(keys[j]) for j in set_drop_reference(values, 0.25)}
        assert set(old) - set(new) == dropped and replaced[i] == len(dropped) > 0
        grown = set(new) - set(old)
        assert len(grown) == len(dropped)  # only never-stored connections grow
        assert all(new[k] == old[k] for k in set(old) & set(new))  # kept weights untouched
        assert all(new[k] != 0 for k in grown)  # drawn from the initialiser


def test_set_grows_weights_at_zero_with_a_zero_initialiser():
    model = sparse_model()
    before = [entries(layer) for layer in model.layers]
    sa.Rewirer(model, "SET", fraction=0.25, schedule="constant", seed=1, init_method=0.0).rewire()
    for old, layer in zip(before, model.layers):
        new = entries(layer)
        grown = set(new) - set(old)
        assert grown and all(new[k] == 0.0 for k in grown)
        assert all(new[k] == old[k] for k in set(old) & set(new))


def test_set_growth_is_seeded_and_spread_over_the_free_positions():
    runs = []
    for _ in range(2):
        model = sparse_model()
        sa.Rewirer(model, "SET", 0.5, schedule="constant", seed=4).rewire()
        runs.append([sorted(entries(layer).items()) for layer in model.layers])
    assert runs[0] == runs[1]
    rng = np.random.default_rng(0)
    taken = np.sort(rng.choice(50, 20, replace=False))
    for size, t in ((50, taken), (1 << 20, np.arange(0, 1 << 20, 7))):  # listed, and by rejection
        hits = np.zeros(size)
        for _ in range(200):
            chosen = rewiring.free_positions(rng, size, 10, t)
            assert np.unique(chosen).size == 10 and not np.isin(chosen, t).any()
            assert np.all(np.diff(chosen) > 0)
            hits[chosen] += 1
        free = np.setdiff1d(np.arange(size), t)
        if size == 50:  # every free position equally likely: about 200 * 10 / 30 = 67 each
            assert hits[t].sum() == 0 and hits[free].min() > 30 and hits[free].max() < 110


def dense_gradients(model, x, y):
    """The full dL/dW (n_in, n_out) of every layer, from a dense copy of the model (no masks)."""
    layers = [sa.nn.DENSE_LAYERS[layer.activation](size=layer.size) for layer in model.layers]
    dense = sa.Model(model.input_size, layers, comp_type="CPU", dtype="float64")
    dense.load_weights([(layer.dense_weights(), layer.biases) for layer in model.layers])
    return [g for g, _ in dense.gradients(x, y)]


def test_rigl_drops_the_smallest_magnitudes_and_grows_the_largest_dense_gradients():
    model = sparse_model(seed=2)
    x, y = batch()
    gradients = dense_gradients(model, x, y)
    before = [entries(layer) for layer in model.layers]
    replaced = sa.Rewirer(model, "RigL", 0.2, schedule="constant").rewire(x, y)
    for i, layer in enumerate(model.layers):
        old, new = before[i], entries(layer)
        count = int(round(0.2 * len(old)))
        keys = np.array(list(old))
        magnitudes = np.abs([old[k] for k in keys])
        assert set(old) - set(new) == set(keys[np.argsort(magnitudes, kind="stable")[:count]].tolist())
        # the reference: rank |dL/dW| over every position that was not stored, densely
        score = np.abs(gradients[i].T).reshape(-1)  # (n_out, n_in) row-major positions
        score[keys] = -np.inf
        expected = set(np.argsort(-score, kind="stable")[:count].tolist())
        assert set(new) - set(old) == expected and replaced[i] == count
        assert layer.nnz == len(old)
        assert all(new[k] == 0 for k in expected) and all(new[k] == old[k] for k in set(old) & set(new))


@pytest.mark.parametrize("block_elements", [1 << 22, 37, 600])
def test_top_gradient_positions_in_row_blocks_match_the_dense_ranking(block_elements, monkeypatch):
    monkeypatch.setattr(rewiring, "SAMPLE", 32)  # small blocks take the sampled-threshold path too
    rng = np.random.default_rng(5)
    grad_z, x = rng.standard_normal((60, 8)), rng.standard_normal((50, 8))
    stored = np.sort(rng.choice(3000, 400, replace=False))
    rows, cols = np.divmod(stored, 50)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=60))])
    for count in (1, 25, 300):
        positions, scores = rewiring.top_gradient_positions(grad_z, x, indptr, cols, count, block_elements)
        dense = np.abs(grad_z @ x.T).reshape(-1)
        dense[stored] = -1
        expected = np.sort(np.argsort(-dense, kind="stable")[:count])
        assert np.array_equal(positions, expected) and np.allclose(scores, dense[expected])


def state_by_key(optimizer):
    """{(layer, kind, state name): {key: value}} of an optimizer's state."""
    result = {}
    for (i, kind), entry in optimizer.state_dict()["slots"].items():
        for name in set(entry) - {"keys", "shape"}:
            result[(i, kind, name)] = dict(zip(entry["keys"].tolist(), entry[name].tolist()))
    return result


@pytest.mark.parametrize("method", ["SET", "RigL"])
@pytest.mark.parametrize("make", [lambda m: sa.AdamOptimizer(m, 0.01), lambda m: sa.SGDOptimizer(m, 0.05, momentum=0.9)])
def test_optimizer_state_of_kept_entries_is_unchanged_and_of_new_entries_zero(method, make):
    model = sparse_model()
    optimizer = make(model)
    x, y = batch()
    for _ in range(4):
        optimizer.train_step(x, y)
    before = state_by_key(optimizer)
    rewirer = sa.Rewirer(model, method, 0.3, every=1, schedule="constant", seed=0)
    assert rewirer.step() is not None  # finds the optimizer (and, for RigL, its last batch)
    after = state_by_key(optimizer)
    for (i, kind, name), old in before.items():
        new = after[(i, kind, name)]
        if kind == "biases":
            assert new == old
            continue
        stored = set(entries(model.layers[i]))  # (n_out, n_in) positions; the keys are (n_in, n_out) ones
        n_in, n_out = model.layers[i].input_size, model.layers[i].size
        assert set(new) == {(p % n_in) * n_out + p // n_in for p in stored}
        assert all(new[k] == old[k] for k in set(new) & set(old))
        assert all(new[k] == 0 for k in set(new) - set(old)) and set(new) - set(old)
    optimizer.train_step(x, y)  # and trains on


def test_the_fast_state_carry_equals_the_match_by_position():
    from sparana.nn import _optimizers

    model = sparse_model()
    optimizer = sa.AdamOptimizer(model, 0.01)
    x, y = batch()
    optimizer.train_step(x, y)
    old = {key: slot for key, slot in optimizer._slots.items()}
    old_state = {key: {n: a.copy() for n, a in slot.state.items()} for key, slot in old.items()}
    sa.Rewirer(model, "SET", 0.4, schedule="constant", seed=0).rewire()
    for (i, kind), slot in old.items():
        if kind != "weights":
            continue
        layer = model.layers[i]
        for name, array in old_state[(i, kind)].items():
            by_lineage = layer.carry(array, slot.serial)
            by_keys = _optimizers._remap(slot.keys, array, layer.value_keys(), layer.backend)
            assert np.array_equal(by_lineage, by_keys)


@pytest.mark.parametrize("method", ["SET", "RigL"])
def test_a_rewired_model_saves_and_loads_bit_for_bit_and_trains_on(method, tmp_path):
    model = sparse_model(dropout=0.2)
    optimizer = sa.AdamOptimizer(model, 0.01)
    x, y = batch()
    rewirer = sa.Rewirer(model, method, 0.3, every=2, schedule="constant", seed=0)
    for _ in range(4):
        optimizer.train_step(x, y)
        rewirer.step(optimizer)
    path = tmp_path / "rewired.safetensors"
    sa.save_checkpoint(path, model, optimizer)
    checkpoint = sa.read_checkpoint(path)
    rebuilt = checkpoint.build_model()
    rebuilt_optimizer = checkpoint.build_optimizer(rebuilt)
    for a, b in zip(model.layers, rebuilt.layers):
        assert a.to_scipy().nnz == b.nnz and np.array_equal(a.to_scipy().indices, b.to_scipy().indices)
        assert a.values.tobytes() == b.values.tobytes() and a.biases.tobytes() == b.biases.tobytes()
    assert state_by_key(rebuilt_optimizer) == state_by_key(optimizer)
    if method == "RigL":  # the regrown zeros stay stored
        assert sum(int((layer.values == 0).sum()) for layer in rebuilt.layers) > 0
    for _ in range(3):
        optimizer.train_step(x, y)
        rebuilt_optimizer.train_step(x, y)
    assert all(a.values.tobytes() == b.values.tobytes() for a, b in zip(model.layers, rebuilt.layers))


def test_the_saver_snapshot_restores_the_pattern_before_rewiring():
    model = sparse_model()
    saver = sa.ModelSaver(model)
    before = [entries(layer) for layer in model.layers]
    sa.Rewirer(model, "SET", 0.5, schedule="constant", seed=0).rewire()
    assert [entries(layer) for layer in model.layers] != before
    saver.restore_model()
    assert [entries(layer) for layer in model.layers] == before


def test_statistics_and_training_masks_follow_the_new_pattern():
    model = sparse_model()
    lobo = sa.Lobotomizer(model)
    stats = [s.copy() for s in lobo.get_absolute_values()]
    keys_before = [model.layers[i].value_keys() for i in range(3)]
    model.layers[0].training_mask = np.arange(model.layers[0].nnz) % 2 == 0
    mask_before = dict(zip(keys_before[0].tolist(), model.layers[0].training_mask.tolist()))
    sa.Rewirer(model, "SET", 0.3, schedule="constant", seed=0).rewire()
    followed = lobo._require_statistics()
    for i, layer in enumerate(model.layers):
        old = dict(zip(keys_before[i].tolist(), stats[i].tolist()))
        for key, value in zip(layer.value_keys().tolist(), followed[i].tolist()):
            assert value == old[key] if key in old else np.isnan(value)
    mask = dict(zip(model.layers[0].value_keys().tolist(), model.layers[0].training_mask.tolist()))
    assert all(mask[k] == mask_before.get(k, True) for k in mask)  # new connections are trained
    removed = lobo.prune_smallest(layers=[0.8, 0.8, 0.8])  # pruning after rewiring ranks the followed stats
    assert all(n > 0 for n in removed)


def test_the_fraction_decays_with_the_schedule_and_step_rewires_every_few_steps():
    assert rewire_fraction(0.3, 0, 100, "cosine") == pytest.approx(0.3)
    assert rewire_fraction(0.3, 50, 100, "cosine") == pytest.approx(0.15)
    assert rewire_fraction(0.3, 25, 100, "linear") == pytest.approx(0.225)
    assert rewire_fraction(0.3, 100, 100, "cosine") == 0 and rewire_fraction(0.3, 7, None, "constant") == 0.3
    model = sparse_model()
    optimizer = sa.SGDOptimizer(model, 0.01)
    rewirer = sa.Rewirer(model, "SET", 0.3, every=3, end=10, seed=0)
    x, y = batch()
    done = []
    for step in range(1, 13):
        optimizer.train_step(x, y)
        if rewirer.step(optimizer) is not None:
            done.append(step)
    assert done == [3, 6, 9]
    assert [h["fraction"] for h in rewirer.history] == pytest.approx([rewire_fraction(0.3, s, 10) for s in done])
    state = rewirer.state_dict()
    other = sa.Rewirer(sparse_model(), "SET", 0.3, every=3, end=10, seed=5)
    other.load_state_dict(state)
    assert other.steps == 12 and other.rng.bit_generator.state == rewirer.rng.bit_generator.state


def test_bad_arguments_say_what_was_expected():
    model = sparse_model()
    with pytest.raises(ValueError, match="method must be one of .* got 'magnitude'"):
        sa.Rewirer(model, "magnitude")
    with pytest.raises(ValueError, match=r"fraction must be a number in \[0.0, 1.0\], got 1.5"):
        sa.Rewirer(model, fraction=1.5)
    with pytest.raises(ValueError, match="give end="):
        sa.Rewirer(model, schedule="cosine")
    with pytest.raises(ValueError, match="schedule must be one of .* got 'step'"):
        sa.Rewirer(model, schedule="step", end=5)
    with pytest.raises(ValueError, match="RigL grows where the gradient .* pass inputs and labels"):
        sa.Rewirer(model, "RigL", schedule="constant").rewire()
    mixed = build_model(SIZES, ["relu", "relu", "linear"], sparse=[True, False, False])
    with pytest.raises(ValueError, match="layer 1 is dense: only sparse"):
        sa.Rewirer(mixed, layers=[1], schedule="constant").rewire()
    dense = build_model(SIZES, ["relu", "relu", "linear"])
    with pytest.raises(ValueError, match="no sparse layer to rewire"):
        sa.Rewirer(dense, schedule="constant").rewire()


def test_a_rewired_layer_computes_what_its_dense_matrix_does():
    model = sparse_model()
    x, y = batch()
    optimizer = sa.AdamOptimizer(model, 0.01)
    optimizer.train_step(x, y)
    sa.Rewirer(model, "RigL", 0.3, schedule="constant").rewire(x, y)
    sa.Rewirer(model, "SET", 0.3, schedule="constant", seed=1).rewire()
    a = x
    for layer in model.layers:
        z = a @ layer.dense_weights() + layer.biases
        a = np.maximum(z, 0) if layer.activation == "relu" else z
    assert np.allclose(model.outputs(x), a)
    gradients = dense_gradients(model, x, y)
    sparse_gradients = model.gradients(x, y)
    for layer, dense, (sparse, _) in zip(model.layers, gradients, sparse_gradients):
        assert np.allclose(dense.reshape(-1)[layer.value_keys()], sparse)  # SDDMM on the new pattern, and its transpose
