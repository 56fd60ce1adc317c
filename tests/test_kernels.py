"""The Numba kernels against the plain array-module reference (which is also the GPU code)."""

import contextlib

import numpy as np
import pytest
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st

import sparana as sa
from sparana import _threads
from sparana._backend import ALIGNMENT, aligned_empty
from sparana.kernels import SparsePattern, cpu, generic
from sparana.kernels.rules import AdamStep, SGDStep


MODES = ("plain", "parallel")


@contextlib.contextmanager
def kernel_mode(mode):
    """Force every CPU kernel call down one of its two compiles (see cpu._Kernel).

    "parallel" runs on two threads where Numba's pool has them, whatever the machine's load, and
    splits the sparse products into three row blocks per thread, so that blocks of every size
    (empty ones too) meet at their edges.
    """
    kernels = [k for k in vars(cpu).values() if isinstance(k, cpu._Kernel)]
    saved = cpu.PARALLEL_WORK, cpu.BLOCKS_PER_THREAD, _threads.usable_cpus, [k.threaded for k in kernels]
    if mode == "parallel":
        cpu.PARALLEL_WORK = 0
        cpu.BLOCKS_PER_THREAD = 3
        _threads.usable_cpus = lambda: 2
    for k in kernels:
        k.threaded = mode == "parallel"
    try:
        yield
    finally:
        cpu.PARALLEL_WORK, cpu.BLOCKS_PER_THREAD, _threads.usable_cpus = saved[:3]
        for k, threaded in zip(kernels, saved[3]):
            k.threaded = threaded


def random_csr(rng, n_out, n_in, density, dtype):
    matrix = scipy.sparse.random(n_out, n_in, density=density, format="csr", random_state=rng, dtype=dtype)
    matrix.sort_indices()
    return matrix


shapes = st.tuples(st.integers(1, 40), st.integers(1, 40), st.integers(1, 17),
                   st.floats(0.0, 1.0), st.sampled_from([np.float32, np.float64]), st.integers(0, 2**31))


def check_products(matrix, batch, dtype, rng, modes=(generic, *MODES)):
    """spmm (with and without bias and ReLU), spmm_t and sddmm against dense NumPy, in every mode."""
    n_out, n_in = matrix.shape
    pattern = SparsePattern(matrix.indptr, matrix.indices, matrix.shape)
    x = rng.standard_normal((n_in, batch)).astype(dtype)
    grad = rng.standard_normal((n_out, batch)).astype(dtype)
    bias = rng.standard_normal(n_out).astype(dtype)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    dense = matrix.toarray()
    full = grad @ x.T  # the dense weight gradient in (n_out, n_in) orientation
    rows = np.repeat(np.arange(n_out), np.diff(matrix.indptr))
    for kernels in modes:
        with kernel_mode(kernels) if kernels in MODES else contextlib.nullcontext():
            module = generic if kernels is generic else cpu
            for b, relu in ((bias, False), (bias, True), (None, False)):
                out = np.full((n_out, batch), np.nan, dtype)
                module.spmm(pattern, matrix.data, x, b, relu, out)
                expected = dense @ x + (0 if b is None else b[:, None])
                np.testing.assert_allclose(out, np.maximum(expected, 0) if relu else expected, **tol)
            out_t = np.full((n_in, batch), np.nan, dtype)
            module.spmm_t(pattern, matrix.data, grad, out_t)
            np.testing.assert_allclose(out_t, dense.T @ grad, **tol)
            sampled = np.full(matrix.nnz, np.nan, dtype)
            module.sddmm(pattern, grad, x, sampled)
            np.testing.assert_allclose(sampled, full[rows, matrix.indices], **tol)


@settings(max_examples=40, deadline=None)
@given(shapes)
def test_sparse_products_match_reference(params):
    n_out, n_in, batch, density, dtype, seed = params
    rng = np.random.default_rng(seed)
    check_products(random_csr(rng, n_out, n_in, density, dtype), batch, dtype, rng)


# Batches around the tile (128 float32 or 64 float64 columns): whole tiles only, tiles and a rest,
# a rest only; rows 4 KB apart (1,024 float32, 512 float64 columns) of an operand whose rows are
# each picked 32 times or more take the padded copy.
# At density 1 the rows of x are picked often (SDDMM over tiles, padded copies); at 0.2 they are not.
@pytest.mark.parametrize("density", [1.0, 0.2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [63, 64, 65, 127, 128, 129, 256, 300, 512, 1024])
def test_sparse_products_across_tiles(batch, dtype, density, rng):
    matrix = random_csr(rng, 40, 37, density, dtype)
    matrix = matrix.multiply(np.arange(40)[:, None] % 9 != 4).tocsr()  # four empty rows
    matrix.sort_indices()
    often = density == 1.0
    assert cpu._often_picked(np.zeros((40, 1)), matrix.nnz) == often
    padded = often and batch * np.dtype(dtype).itemsize % 4096 == 0
    for rows in (37, 40):  # x for spmm and sddmm, the gradient for spmm_t
        assert (cpu._tileable(np.zeros((rows, batch), dtype), matrix.nnz).shape[1] > batch) == padded
    check_products(matrix, batch, dtype, rng)


def test_row_blocks_balance_work(rng):
    matrix = random_csr(rng, 200, 50, 0.1, np.float32)
    pattern = SparsePattern(matrix.indptr, matrix.indices, matrix.shape)
    for count in (1, 2, 3, 7, 500):
        bounds = pattern.row_blocks(count)
        assert bounds[0] == 0 and bounds[-1] == 200 and len(bounds) == count + 1
        assert np.all(np.diff(bounds) >= 0)
        if count <= 7:
            work = np.diff((matrix.indptr + np.arange(201))[bounds])
            assert work.max() - work.min() <= 2 * (np.diff(matrix.indptr).max() + 1)
    assert pattern.row_blocks(3) is pattern.row_blocks(3)
    t = pattern.row_blocks(2, transposed=True)
    assert t[0] == 0 and t[-1] == 50


def test_transpose_pattern_maps_values(rng):
    matrix = random_csr(rng, 13, 17, 0.3, np.float64)
    pattern = SparsePattern(matrix.indptr, matrix.indices, matrix.shape)
    transposed = scipy.sparse.csr_matrix((matrix.data[pattern.perm], pattern.t_indices, pattern.t_indptr),
                                         shape=(17, 13))
    np.testing.assert_array_equal(transposed.toarray(), matrix.toarray().T)


def test_pattern_rejects_bad_structure():
    with pytest.raises(ValueError, match="indptr"):
        SparsePattern(np.array([0, 1]), np.array([0, 1]), (1, 3))
    with pytest.raises(ValueError, match="column indices"):
        SparsePattern(np.array([0, 1]), np.array([5]), (1, 3))
    with pytest.raises(ValueError, match="sorted"):
        SparsePattern(np.array([0, 2]), np.array([2, 1]), (1, 3))


@pytest.mark.parametrize("relu", [False, True])
def test_bias_activation_and_relu_backward(relu, rng):
    z = rng.standard_normal((31, 9)).astype(np.float32)
    bias = rng.standard_normal(31).astype(np.float32)
    a, b = z.copy(), z.copy()
    cpu.bias_activation(a, bias, relu)
    generic.bias_activation(b, bias, relu)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    grad = rng.standard_normal((31, 9)).astype(np.float32)
    g1, g2 = grad.copy(), grad.copy()
    cpu.relu_backward(g1, a, 2.0)
    generic.relu_backward(g2, a, 2.0)
    np.testing.assert_allclose(g1, g2, rtol=1e-6)
    np.testing.assert_array_equal(g1 == 0, (a <= 0) | (grad == 0))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_sums_match_numpy(mode, dtype, rng):
    a = rng.standard_normal((37, 130)).astype(dtype)
    sums = np.full(37, np.nan, dtype)
    with kernel_mode(mode):
        cpu.row_sums(a, sums)
    np.testing.assert_allclose(sums, a.astype(np.float64).sum(axis=1), rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-4 if dtype == np.float32 else 1e-12)
    reference = np.empty(37, dtype)
    generic.row_sums(a, reference)
    np.testing.assert_allclose(sums, reference, rtol=1e-5, atol=1e-4)


def test_adam_in_float32_matches_the_float32_formula(rng):
    """The compiled step keeps float32 moments in float32 (the record carries 1 - beta), and gives
    the plain formula's result to float32 rounding."""
    w, g = rng.standard_normal(1000).astype(np.float32), rng.standard_normal(1000).astype(np.float32)
    m, v = rng.standard_normal(1000).astype(np.float32), rng.random(1000).astype(np.float32)
    step = AdamStep(step_size=1e-2, beta1=0.9, beta2=0.999, epsilon=1e-8)
    assert step.scalars(np.float32)[-2:] == (np.float32(1 - 0.9), np.float32(1 - 0.999))
    w1, m1, v1 = w.copy(), m.copy(), v.copy()
    cpu.adam_update(w1, g, m1, v1, None, step)
    f = np.float32
    m2 = f(0.9) * m + f(1 - 0.9) * g
    v2 = f(0.999) * v + f(1 - 0.999) * g * g
    w2 = w - f(1e-2) * m2 / (np.sqrt(v2) + f(1e-8))
    assert w1.dtype == m1.dtype == v1.dtype == np.float32
    for got, expected in ((w1, w2), (m1, m2), (v1, v2)):
        np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-7)


UPDATE_ARGS = st.tuples(st.integers(1, 200), st.booleans(), st.sampled_from([0.0, 0.5]),
                        st.sampled_from([0.0, 0.01]), st.sampled_from([0.0, 0.02]),
                        st.sampled_from([0.0, 1e-3]), st.integers(0, 2**31))


def _update_inputs(n, indexed, seed):
    rng = np.random.default_rng(seed)
    w, g = rng.standard_normal(n), rng.standard_normal(n) * 2
    index = np.flatnonzero(rng.random(n) < 0.5) if indexed else None
    k = n if index is None else index.size
    return w, g, index, k, rng


@settings(max_examples=40, deadline=None)
@given(UPDATE_ARGS)
def test_adam_update_matches_reference(params):
    n, indexed, clip, l1, l2, decay, seed = params
    w, g, index, k, rng = _update_inputs(n, indexed, seed)
    m, v = rng.standard_normal(k), rng.random(k)
    args = (index, AdamStep(step_size=1e-2, beta1=0.9, beta2=0.999, epsilon=1e-8, clip=clip or None, l1=l1, l2=l2,
                            decay1=decay / 2, decay2=decay))
    mode = MODES[seed % 2]
    w1, m1, v1 = w.copy(), m.copy(), v.copy()
    with kernel_mode(mode):
        cpu.adam_update(w1, g, m1, v1, *args, parallel=seed % 2 == 0)
    w2, m2, v2 = w.copy(), m.copy(), v.copy()
    generic.adam_update(w2, g, m2, v2, *args)
    # the plain formula
    sel = slice(None) if index is None else index
    gi = np.clip(g[sel], -clip, clip) if clip else g[sel].copy()
    gi += l2 * w[sel] + l1 * np.sign(w[sel])
    m3 = 0.9 * m + 0.1 * gi
    v3 = 0.999 * v + 0.001 * gi * gi
    w3 = w.copy()
    w3[sel] = w[sel] - (1e-2 * m3 / (np.sqrt(v3) + 1e-8) + decay * w[sel] + decay / 2 * np.sign(w[sel]))
    for got in ((w1, m1, v1), (w2, m2, v2)):
        np.testing.assert_allclose(got[0], w3, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got[1], m3, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got[2], v3, rtol=1e-12, atol=1e-12)
    if index is not None:  # untouched entries are bit-for-bit unchanged
        rest = np.setdiff1d(np.arange(n), index)
        assert np.array_equal(w1[rest], w[rest]) and np.array_equal(w2[rest], w[rest])


@settings(max_examples=40, deadline=None)
@given(UPDATE_ARGS)
def test_sgd_update_matches_reference(params):
    n, indexed, clip, l1, l2, decay, seed = params
    w, g, index, k, rng = _update_inputs(n, indexed, seed)
    sel = slice(None) if index is None else index
    for momentum in (0.0, 0.9):
        velocity = rng.standard_normal(k) if momentum else None
        args = (index, SGDStep(learning_rate=0.1, momentum=momentum, clip=clip or None, l1=l1, l2=l2,
                               decay1=decay / 2, decay2=decay))
        w1, w2 = w.copy(), w.copy()
        v1 = None if velocity is None else velocity.copy()
        v2 = None if velocity is None else velocity.copy()
        with kernel_mode(MODES[seed % 2]):
            cpu.sgd_update(w1, g, v1, *args)
        generic.sgd_update(w2, g, v2, *args)
        gi = np.clip(g[sel], -clip, clip) if clip else g[sel].copy()
        gi += l2 * w[sel] + l1 * np.sign(w[sel])
        if momentum:
            gi = momentum * velocity + gi
        w3 = w.copy()
        w3[sel] = w[sel] - (0.1 * gi + decay * w[sel] + decay / 2 * np.sign(w[sel]))
        np.testing.assert_allclose(w1, w3, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(w2, w3, rtol=1e-12, atol=1e-12)
        if momentum:
            # The velocity can be a difference of nearly equal terms: the compiled kernel's fused
            # multiply-add rounds once where NumPy rounds twice, an error of a few ulps of the terms.
            terms = np.abs(momentum * velocity) + np.abs(gi - momentum * velocity)
            assert np.all(np.abs(v1 - gi) <= 1e-12 * np.abs(gi) + 4 * np.finfo(w.dtype).eps * terms)
            np.testing.assert_allclose(v2, gi, rtol=1e-12)


def test_the_cpu_kernels_compile_the_rules_written_once():
    from sparana.kernels import rules

    assert cpu._adam.py_func is rules.adam and cpu._sgd.py_func is rules.sgd


def test_a_rule_rebound_to_another_array_module_computes_the_same():
    """What the GPU kernels do before cupy.fuse traces a rule: its xp functions come from CuPy."""
    from sparana.kernels import rules

    called = []

    class Recording:
        def __getattr__(self, name):
            called.append(name)
            return getattr(np, name)

    rng = np.random.default_rng(0)
    w, g, m, v = rng.standard_normal((4, 50))
    v = abs(v)
    scalars = rules.AdamStep(step_size=1e-2, beta1=0.9, beta2=0.999, epsilon=1e-8, clip=0.5, l1=1e-3, l2=1e-2,
                             decay1=1e-4, decay2=1e-3).scalars(np.float64)
    expected = rules.adam(w, g, m, v, scalars)
    got = rules.with_array_module(rules.adam, Recording())(w, g, m, v, scalars)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    assert {"minimum", "maximum", "sign", "sqrt"} <= set(called)


def test_the_experimental_rules_update_only_the_indexed_entries():
    from sparana.kernels import rules

    rng = np.random.default_rng(1)
    w, g = rng.standard_normal(30), rng.standard_normal(30)
    index = np.flatnonzero(rng.random(30) < 0.5)
    accumulator = np.zeros(index.size)
    before = w.copy()
    step = rules.MadadadStep(learning_rate=0.1, friction=0.5)
    cpu.rule_update(rules.madadad, w, g, (accumulator,), index, step)
    rest = np.setdiff1d(np.arange(30), index)
    assert np.array_equal(w[rest], before[rest])
    np.testing.assert_allclose(accumulator, -np.sign(g[index]))
    np.testing.assert_allclose(w[index], before[index] - 0.1 * g[index] * 1.0)


def test_the_gpu_updates_fuse_the_same_rules(monkeypatch):
    """gpu.py's plumbing on the CPU: a stand-in for CuPy whose fuse, like cupy.fuse, takes only arrays
    and scalars, and whose array functions are NumPy's."""
    import sys
    import types

    from sparana.kernels import gpu, rules

    def fuse(kernel_name):
        def decorate(function):
            def kernel(*arguments):
                assert all(isinstance(a, (np.ndarray, np.generic)) for a in arguments), "cupy.fuse takes no tuples"
                return function(*arguments)
            return kernel
        return decorate

    fake = types.ModuleType("cupy")
    fake.fuse = fuse
    for name in ("abs", "maximum", "minimum", "sign", "sqrt"):
        setattr(fake, name, getattr(np, name))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    gpu._fused.cache_clear()
    try:
        rng = np.random.default_rng(2)
        w, g = rng.standard_normal(40), rng.standard_normal(40)
        index = np.flatnonzero(rng.random(40) < 0.5)
        adam = rules.AdamStep(step_size=1e-2, beta1=0.9, beta2=0.999, epsilon=1e-8, clip=0.5, l2=1e-2)
        sgd = rules.SGDStep(learning_rate=0.1, momentum=0.9, l1=1e-3, decay2=1e-3)
        for name, states, step in (("adam_update", 2, adam), ("sgd_update", 1, sgd)):
            results = []
            for kernels in (cpu, gpu):
                wk, state = w.copy(), [np.full(index.size, 0.5) for _ in range(states)]
                getattr(kernels, name)(wk, g, *state, index, step)
                results.append([wk, *state])
            for on_gpu, on_cpu in zip(*results):
                np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-12)
        wk, velocity_free = w.copy(), w.copy()
        gpu.sgd_update(wk, g, None, None, rules.SGDStep(learning_rate=0.1))
        cpu.sgd_update(velocity_free, g, None, None, rules.SGDStep(learning_rate=0.1))
        np.testing.assert_allclose(wk, velocity_free, rtol=1e-12)
    finally:
        gpu._fused.cache_clear()


@pytest.mark.parametrize("shape", [(), 7, np.int64(7), (0, 5), [3, 1000], np.array([1000, 784])])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_aligned_empty_starts_on_a_cache_line(shape, dtype):
    array = aligned_empty(shape, dtype)
    assert array.shape == np.empty(shape).shape and array.dtype == dtype
    assert array.flags.c_contiguous and array.flags.writeable
    assert array.size == 0 or array.ctypes.data % ALIGNMENT == 0
    array[...] = 3
    assert (array == 3).all()


def test_aligned_empty_rejects_negative_dimensions():
    with pytest.raises(ValueError, match="negative"):
        aligned_empty((2, -1), np.float32)


def test_the_layers_give_the_sparse_kernels_aligned_operands(rng, monkeypatch):
    """Training and the per-core evaluation alike (NumPy's own large arrays start 16 bytes past a
    cache line: the kernels ran 15 to 30% slower on them)."""
    import numba

    from conftest import build_model
    from sparana.nn._model import SPARSE_EVAL_CHUNK

    monkeypatch.setattr(_threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 2)
    model = build_model([784, 300, 100, 10], ["relu", "relu", "linear"])
    model.convert_to_sparse([0, 1])  # (a dense head, as in the benchmarks: the loss's gradient is NumPy's)
    offsets = []
    for name in ("spmm", "spmm_t", "sddmm"):
        def record(*args, kernel=getattr(cpu, name)):
            offsets.extend(a.ctypes.data % ALIGNMENT for a in args if isinstance(a, np.ndarray) and a.ndim == 2)
            return kernel(*args)
        monkeypatch.setattr(cpu, name, record)
    optimizer = sa.SGDOptimizer(model, 0.01)
    optimizer.compiled = False  # (the layer-by-layer step: the compiled one is test_fused_step's)
    optimizer.train_step(rng.random((128, 784)), rng.integers(0, 10, 128))
    # (two SpMMs, two SDDMMs and the second layer's transposed SpMM, two operands each)
    assert len(offsets) == 10 and set(offsets) == {0}
    model.outputs(rng.random((2 * SPARSE_EVAL_CHUNK, 784)))  # two chunks through two SpMMs
    assert len(offsets) == 18 and set(offsets) == {0}


_COMPILED_FEATURES = """
from sparana.kernels import cpu
from numba.core import codegen, registry
print(codegen.get_host_cpu_features())
print(registry.cpu_target.target_context.codegen()._tm_features)
"""


def test_512_bit_vectors_where_the_cpu_has_them():
    """What Numba compiles for in a new process that loads the kernels first: LLVM's tuning for
    CPUs with AVX-512 prefers 256-bit vectors unless told otherwise (see cpu._wide_vectors)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU") and k != "NUMBA_ENABLE_AVX"}

    def host_and_compiled(**extra):
        return subprocess.run([sys.executable, "-c", _COMPILED_FEATURES], env={**env, **extra}, check=True,
                              capture_output=True, text=True).stdout.splitlines()

    host, compiled = host_and_compiled()
    assert compiled == (host + ",-prefer-256-bit" if "+avx512f" in host.split(",") else host)
    host, compiled = host_and_compiled(NUMBA_ENABLE_AVX="0")  # Numba's switch for no AVX at all still holds
    assert "+avx512f" not in compiled.split(",") and compiled == host


def test_no_vector_choice_where_llvm_cannot_read_the_cpu(monkeypatch):
    from numba.core import codegen

    monkeypatch.setattr(codegen, "get_host_cpu_features", lambda: "")  # (what Numba returns then)
    assert cpu._wide_vectors() is None


def test_a_pattern_computes_its_keys_once_and_shares_them_read_only():
    matrix = scipy.sparse.random(6, 9, density=0.4, random_state=3, format="csr")
    matrix.sort_indices()
    pattern = SparsePattern(matrix.indptr, matrix.indices, matrix.shape)
    keys = pattern.keys()
    assert pattern.keys() is keys and not keys.flags.writeable
    inputs, units = np.divmod(keys, matrix.shape[0])  # positions in the dense (n_in, n_out) matrix
    np.testing.assert_array_equal(matrix.toarray()[units, inputs], matrix.data)
