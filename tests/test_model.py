"""Model behaviour: outputs, accuracy, initialisation, conversions, surgery and bad input."""

import re
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

import sparana as sa
from conftest import build_model

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "000_8d4f253199897f89.txt"
README_SNIPPET = """
mymodel = model(input_size = 784,
                layers = [full_relu_layer(size = 1000),
                          full_relu_layer(size = 800),
                          full_relu_layer(size = 400),
                          full_linear_layer(size = 10)],
                comp_type = 'CPU')
"""


def test_original_readme_snippet_runs_unchanged(rng):
    namespace = {}
    exec("from sparana import *", namespace)
    snippet = README_SNIPPET
    if REFERENCE.exists():  # the original documentation's own first example, with comp_type='CPU'
        blocks = re.findall(r"```python\n(mymodel = model\(.*?\))\n```", REFERENCE.read_text(), re.S)
        snippet = blocks[0].replace("comp_type = 'GPU'", "comp_type = 'CPU'")
    exec(snippet, namespace)
    mymodel = namespace["mymodel"]
    mymodel.initialize_weights("Xavier", bias_constant=0.1)
    assert mymodel.sizes == [784, 1000, 800, 400, 10]
    assert mymodel.outputs(rng.random((3, 784))).shape == (3, 10)
    assert mymodel.comp_type == "CPU" and mymodel.layer_type == "Full"


def test_aliases_are_the_pep8_classes():
    assert sa.model is sa.Model and sa.full_relu_layer is sa.DenseReluLayer
    assert sa.adam_optimizer is sa.AdamOptimizer and sa.sgd_optimizer is sa.SGDOptimizer


def test_outputs_partial_outputs_and_activations(rng):
    model = build_model([6, 5, 4, 3], ["relu", "relu", "linear"], dtype="float32")
    x = rng.random((8, 6)).astype(np.float32)
    acts = model.activations(x)
    np.testing.assert_allclose(model.partial_outputs(x, 0), x)
    for depth in range(1, 4):
        np.testing.assert_allclose(model.partial_outputs(x, depth), acts[depth], rtol=1e-6)
    w, b = model.layers[0].weights, model.layers[0].biases
    np.testing.assert_allclose(acts[1], np.maximum(x @ w + b, 0), rtol=1e-5)
    assert model.outputs(x).dtype == np.float32
    np.testing.assert_allclose(model.outputs(x[0]), model.outputs(x)[:1], rtol=1e-6)  # one sample


def test_large_batches_are_evaluated_in_chunks(rng, monkeypatch):
    model = build_model([5, 4, 3], ["relu", "linear"])
    x = rng.random((50, 5))
    whole = model.outputs(x)
    monkeypatch.setattr("sparana.nn._model.EVAL_CHUNK", 7)
    np.testing.assert_allclose(model.outputs(x), whole, rtol=1e-12)


def test_sparse_models_on_the_cpu_evaluate_one_batch_tile_at_a_time(rng, monkeypatch):
    import numba

    from sparana import _threads
    from sparana.nn._model import SPARSE_EVAL_CHUNK

    monkeypatch.setattr(_threads, "usable_cpus", lambda: 2)  # two threads, whatever this machine has
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 2)
    model = build_model([5, 8, 4], ["relu", "linear"])
    x = rng.random((2 * SPARSE_EVAL_CHUNK + 3, 5))
    dense_whole = model.outputs(x)
    model.convert_to_sparse()
    one_pass = model.forward(np.ascontiguousarray(x.T)).T
    np.testing.assert_allclose(one_pass, dense_whole, rtol=1e-5)
    passes = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda x, **kw: passes.append(x.shape[1]) or forward(x, **kw))
    np.testing.assert_array_equal(model.outputs(x), one_pass)  # each column as in one pass, bit for bit
    assert sorted(passes) == [3, SPARSE_EVAL_CHUNK, SPARSE_EVAL_CHUNK]  # (the chunks may run side by side)
    # each thread's chunk is contiguous: no layer copied it into its one buffer for such inputs
    assert not any("evaluation inputs" in layer._buffers for layer in model.layers)
    passes.clear()
    model.outputs(x[:SPARSE_EVAL_CHUNK + 1])  # fewer tiles than threads: one pass, on both threads
    assert passes == [SPARSE_EVAL_CHUNK + 1]
    model.convert_to_dense()
    passes.clear()
    model.outputs(x)
    assert passes == [x.shape[0]]  # a dense model: one pass


def test_accuracy_top_k_and_label_formats(rng):
    model = build_model([5, 8, 4], ["relu", "linear"])
    x = rng.random((40, 5))
    out = model.outputs(x)
    order = np.argsort(-out, axis=1)
    labels = order[:, 1]  # every label is the second-best output
    assert model.get_accuracy(x, labels) == 0.0
    assert model.get_accuracy(x, order[:, 0]) == 1.0
    assert model.get_top_k_accuracy(x, labels, k=2) == 1.0
    assert model.get_accuracy(x, np.eye(4)[order[:, 0]]) == 1.0  # one-hot labels
    mixed = np.where(np.arange(40) % 2 == 0, order[:, 0], order[:, 2])
    assert model.get_accuracy(x, mixed) == 0.5
    assert model.get_top_k_accuracy(x, mixed, k=3) == 1.0


def test_one2ratio_and_softmax_output(rng):
    model = build_model([5, 4], ["linear"])
    x = rng.random((6, 5))
    out = model.outputs(x)
    top = np.sort(out, axis=1)
    np.testing.assert_allclose(model.one2ratio(x), top[:, -1] / top[:, -2])
    probs = model.softmax_output(x)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(probs, np.exp(out) / np.exp(out).sum(axis=1, keepdims=True))


def test_xavier_std_and_bias_constant():
    model = sa.Model(400, [sa.DenseReluLayer(600), sa.DenseLinearLayer(10)], comp_type="CPU", seed=0)
    model.initialize_weights("Xavier", bias_constant=0.1)
    w = model.layers[0].weights
    assert w.dtype == np.float32
    assert abs(w.std() - np.sqrt(3 / 1000)) < 0.002
    assert np.all(model.layers[1].biases == np.float32(0.1))
    model.initialize_weights(0.05, bias_constant=0.0)
    assert model.layers[0].weights.shape == (400, 600)  # the original gave a scalar here
    assert abs(model.layers[0].weights.std() - 0.05) < 0.002


def test_list_initialisation_checks_every_shape(rng):
    model = build_model([3, 4, 2], ["relu", "linear"])
    before = model.outputs(np.ones((1, 3)))
    good = [(rng.random((3, 4)), rng.random(4)), (rng.random((4, 2)), rng.random(2))]
    model.initialize_weights(good)
    np.testing.assert_allclose(model.layers[1].weights, good[1][0])
    with pytest.raises(ValueError, match=r"\(4, 2\)|2 columns|4 inputs"):
        model.initialize_weights([good[0], (rng.random((5, 2)), rng.random(2))])
    with pytest.raises(ValueError, match="2 .*pairs expected, got 1"):
        model.load_weights(good[:1])
    assert not np.allclose(model.outputs(np.ones((1, 3))), before)


def test_seeded_runs_are_bit_for_bit_repeatable(rng):
    x = rng.random((64, 20)).astype(np.float32)
    y = rng.integers(0, 5, 64)
    results = []
    for _ in range(2):
        model = sa.Model(20, [sa.DenseReluLayer(30), sa.DenseReluLayer(20), sa.DenseLinearLayer(5)],
                         comp_type="CPU", seed=42, dropout=0.2)
        model.initialize_weights("Xavier", bias_constant=0.1)
        opt = sa.AdamOptimizer(model, 1e-2)
        losses = [opt.train_step(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
        results.append((losses, [layer.weights.copy() for layer in model.layers]))
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1], results[1][1]):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("style", ["inverted", "original"])
def test_dropout_only_while_training(style, rng):
    model = build_model([10, 50, 4], ["relu", "linear"], dropout=0.5, dropout_style=style)
    x = rng.random((20, 10))
    assert np.array_equal(model.outputs(x), model.outputs(x))  # no dropout in evaluation
    train = model.forward(model._inputs(x), train=True)
    assert not np.allclose(train.T, model.outputs(x))
    dropped = (model.layers[0]._dropout_mask == 0).mean()
    assert 0.35 < dropped < 0.65


def test_convert_to_sparse_and_back_keeps_outputs(rng):
    model = build_model([12, 10, 8, 4], ["relu", "relu", "softmax"], dtype="float32")
    for layer in model.layers:  # prune some weights
        layer.keep_only(rng.random(layer.values.shape) < 0.3)
    x = rng.random((9, 12)).astype(np.float32)
    before = model.outputs(x)
    model.convert_to_sparse()
    assert model.layer_type == "Sparse"
    assert [layer.nnz for layer in model.layers] == [int((np.asarray(m) != 0).sum()) for m in
                                                      (layer.dense_weights() for layer in model.layers)]
    np.testing.assert_allclose(model.outputs(x), before, rtol=1e-5, atol=1e-6)
    model.convert_to_dense()
    assert model.layer_type == "Full"
    np.testing.assert_allclose(model.outputs(x), before, rtol=1e-5, atol=1e-6)
    assert model.layers[0].prune_mask is not None


def test_parameter_count(rng):
    model = build_model([5, 4, 3], ["relu", "linear"])
    assert model.parameter_count() == 5 * 4 + 4 + 4 * 3 + 3
    model.layers[0].keep_only(np.eye(5, 4, dtype=bool))
    assert model.parameter_count(nonzero=True) == 4 + 4 + 4 * 3 + 3
    model.convert_to_sparse()
    assert model.parameter_count() == 4 + 4 + 12 + 3


@pytest.mark.parametrize("sparse", [False, True])
def test_remove_activations_is_exact(sparse, rng):
    model = build_model([6, 7, 5, 3], ["relu", "relu", "linear"], bias=0.3)
    w0, w1 = model.layers[0].weights.copy(), model.layers[1].weights.copy()
    w0[:, [1, 4]] = 0  # units 1 and 4 of layer 0 get no inputs (constant relu(bias) outputs)
    w1[2, :] = 0  # unit 2 of layer 0 has no outputs
    w1[:, 3] = 0  # unit 3 of layer 1 has no inputs
    model.layers[0].weights, model.layers[1].weights = w0, w1
    model.layers[1].biases = np.array([0.3, -0.2, 0.1, 0.5, 0.0])
    if sparse:
        model.convert_to_sparse()
    x = rng.random((11, 6))
    before = model.outputs(x)
    sizes = model.remove_activations()
    assert sizes == [6, 4, 4, 3]
    np.testing.assert_allclose(model.outputs(x), before, rtol=1e-12, atol=1e-12)
    assert model.remove_activations() == sizes  # nothing left to remove


def test_comp_type_choice_and_gpu_errors():
    model = build_model([3, 2], ["linear"], comp_type=None)
    assert model.comp_type == ("GPU" if sa.gpu_available() else "CPU")
    if not sa.gpu_available():
        with pytest.raises(sa.BackendError, match="GPU.*(CuPy|device)"):
            sa.Model(3, [sa.DenseLinearLayer(2)], comp_type="GPU")
        with pytest.raises(sa.BackendError):
            model.convert_comp_type()
        assert model.comp_type == "CPU"
    with pytest.raises(ValueError, match="comp_type must be one of"):
        sa.Model(3, [sa.DenseLinearLayer(2)], comp_type="TPU")


def test_float64_on_request():
    model = build_model([3, 2], ["linear"], dtype="float64")
    assert model.layers[0].weights.dtype == np.float64
    with pytest.raises(ValueError, match="dtype"):
        sa.Model(3, [sa.DenseLinearLayer(2)], comp_type="CPU", dtype="int8")


def test_bad_input_raises_clear_errors(rng):
    model = build_model([4, 3, 2], ["relu", "linear"])
    opt = sa.SGDOptimizer(model, 0.1)
    with pytest.raises(ValueError, match=r"\(batch, 4\) expected, got \(5, 3\)"):
        model.outputs(np.ones((5, 3)))
    with pytest.raises(ValueError, match="5 labels expected .* got 4"):
        opt.train_step(np.ones((5, 4)), np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="finite.*1 NaN"):
        x = np.ones((5, 4))
        x[2, 1] = np.nan
        model.outputs(x)
    with pytest.raises(ValueError, match=r"class ids in \[0, 2\)"):
        opt.train_step(np.ones((2, 4)), np.array([0, 2]))
    with pytest.raises(ValueError, match=r"one-hot \(2, 2\) expected, got \(2, 3\)"):
        opt.train_step(np.ones((2, 4)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="initialisation method .* got 'Gauss'"):
        model.initialize_weights("Gauss")
    with pytest.raises(ValueError, match="loss must be one of .* got 'hinge'"):
        sa.SGDOptimizer(model, 0.1, loss="hinge")
    with pytest.raises(ValueError, match="layer size must be a positive integer, got 0"):
        sa.DenseReluLayer(0)
    with pytest.raises(TypeError, match=r"layers\[1\] must be a layer object"):
        sa.Model(3, [sa.DenseReluLayer(2), "relu"], comp_type="CPU")
    with pytest.raises(ValueError, match="density must be a number in"):
        model.initialize_sparse_weights(0.0)
    with pytest.raises(RuntimeError, match="initialize_weights"):
        sa.Model(3, [sa.DenseReluLayer(2)], comp_type="CPU").outputs(np.ones((1, 3)))
    with pytest.raises(ValueError, match="learning_rate must be a positive number, got -1"):
        sa.AdamOptimizer(model, -1)


def test_sparse_initialisation_densities(rng):
    model = build_model([100, 80, 60, 10], ["relu", "relu", "linear"], sparse=True, density=0.1)
    for layer in model.layers:
        assert layer.nnz == round(0.1 * layer.input_size * layer.size)
    model.initialize_sparse_weights(0.1, "Xavier_2")
    std = np.sqrt(3 / 180) / 0.1
    assert abs(model.layers[0].values.std() - std) < 0.15 * std
    densities = model.initialize_sparse_weights(0.1, distribution="erdos_renyi")
    total = sum(layer.nnz for layer in model.layers)
    assert abs(total - 0.1 * (100 * 80 + 80 * 60 + 60 * 10)) < 5
    assert densities[2] > densities[0]  # smaller layers get denser


def test_xsparse_keeps_the_pattern(rng):
    model = build_model([30, 20, 5], ["relu", "linear"])
    model.layers[0].keep_only(rng.random((30, 20)) < 0.2)
    pattern = model.layers[0].weights != 0
    old = model.layers[0].weights.copy()
    model.initialize_weights("XSparse", bias_constant=0.1)
    new = model.layers[0].weights
    assert np.array_equal(new != 0, pattern) and not np.allclose(new, old)
    model.convert_to_sparse()
    keys = model.layers[0].value_keys()
    model.initialize_weights("XSparse", bias_constant=0.1)
    assert np.array_equal(model.layers[0].value_keys(), keys)


def test_sparse_layer_accepts_scipy_matrices(rng):
    w = scipy.sparse.random(4, 6, density=0.5, random_state=1, format="coo")
    layer = sa.SparseReluLayer(weights=w, biases=np.zeros(4))
    model = sa.Model(None, [layer, sa.DenseLinearLayer(2)], comp_type="CPU", seed=0)
    model.layers[1].set_parameters(rng.random((4, 2)))
    assert model.input_size == 6 and layer.nnz == w.nnz
    np.testing.assert_allclose(layer.weights.toarray(), w.toarray(), rtol=1e-6)


# ------------------------------------------------------------- what a model owns
def host_copies(model):
    return [(layer.values.copy(), layer.biases.copy()) for layer in model.layers]


def train_and_prune(model, rng, steps=3):
    x, y = rng.random((16, model.input_size)), rng.integers(0, model.num_classes, 16)
    optimizer = sa.AdamOptimizer(model, 0.05)
    for _ in range(steps):
        optimizer.train_step(x, y)
    lobo = sa.Lobotomizer(model)
    lobo.get_absolute_values()
    lobo.prune_smallest(0.5, prune_final_layer=True)


@pytest.mark.parametrize("sparse", [False, True])
def test_a_model_loaded_from_another_does_not_share_its_arrays(sparse, rng):
    a = build_model([6, 8, 3], ["relu", "linear"], sparse=sparse, seed=1)
    b = build_model([6, 8, 3], ["relu", "linear"], sparse=sparse, seed=2)
    before = host_copies(a)
    b.initialize_weights([(layer.weights, layer.biases) for layer in a.layers])
    train_and_prune(b, rng)
    for layer, (values, biases) in zip(a.layers, before):
        assert np.array_equal(layer.values, values) and np.array_equal(layer.biases, biases)


@pytest.mark.parametrize("sparse", [False, True])
def test_layers_copy_the_arrays_they_are_given(sparse, rng):
    kind = sa.SparseReluLayer if sparse else sa.DenseReluLayer
    w0 = rng.standard_normal((8, 6)) if sparse else rng.standard_normal((6, 8))
    given = {"w0": scipy.sparse.csr_matrix(w0) if sparse else w0, "b0": rng.standard_normal(8),
             "w1": rng.standard_normal((8, 3)), "b1": rng.standard_normal(3)}
    originals = {name: array.copy() for name, array in given.items()}
    model = sa.Model(6, [kind(weights=given["w0"], biases=given["b0"]),
                         sa.DenseLinearLayer(weights=given["w1"], biases=given["b1"])],
                     comp_type="CPU", dtype="float64", seed=0)
    train_and_prune(model, rng)
    for name, array in given.items():
        if scipy.sparse.issparse(array):
            array, original = array.toarray(), originals[name].toarray()
        else:
            original = originals[name]
        assert np.array_equal(array, original), f"the caller's {name} changed"
    # The setters copy too: changing the caller's arrays afterwards changes nothing in the layer.
    layer = model.layers[1]
    weights, biases = rng.standard_normal((8, 3)), rng.standard_normal(3)
    prune, train = rng.random((8, 3)) < 0.5, rng.random((8, 3)) < 0.5
    layer.prune_mask = None
    layer.weights, layer.biases, layer.prune_mask, layer.training_mask = weights, biases, prune, train
    expected = [weights * prune, biases.copy(), prune.copy(), train.copy()]
    for array in (weights, biases):
        array[...] = 7.0
    prune[...], train[...] = True, False
    for held, wanted in zip((layer.weights, layer.biases, layer.prune_mask, layer.training_mask), expected):
        assert np.array_equal(held, wanted)


def test_a_second_sparse_initialisation_gives_the_density_asked_for():
    model = build_model([40, 30, 10], ["relu", "linear"])  # dense layers: the pattern is a prune mask
    for density in (0.5, 0.5, 0.3, 0.8):
        model.initialize_sparse_weights(density)
        for layer in model.layers:
            wanted = round(density * layer.weights.size)
            assert int(layer.prune_mask.sum()) == wanted
            assert int((layer.weights != 0).sum()) == wanted  # every kept weight has a value
            assert not layer.weights[~layer.prune_mask].any()


def test_an_evaluation_between_forward_and_backward_keeps_the_inputs(rng):
    # A sparse layer copies non-contiguous inputs into buffers that it keeps: one for training (read
    # by the backward pass), one for evaluation, so that an evaluation cannot overwrite the first.
    model = build_model([12, 10, 3], ["relu", "softmax"], sparse=True)
    x = rng.random((7, 12))
    outputs = model.forward(x.T, train=True)  # a transposed view, as the model's inputs are
    evaluated = model.outputs(rng.random((7, 12)))
    assert not np.shares_memory(evaluated, outputs)
    np.testing.assert_array_equal(model.layers[0]._inputs, x.T)
    np.testing.assert_array_equal(model.outputs(x), model.outputs(x.copy()))
