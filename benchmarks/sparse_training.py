"""Truly sparse training and inference against dense, and against PyTorch's sparse CSR tensors.

    python benchmarks/sparse_training.py [--repeats 2] [--baseline DIR]
    python benchmarks/sparse_training.py --kernels [--repeats 2] [--baseline DIR]
    python benchmarks/sparse_training.py --busy [--repeats 2] [--baseline DIR]
    python benchmarks/sparse_training.py --bound [--repeats 2]

The documentation's model 784-1000-800-400-10 with its three hidden layers at 95% and 99%
sparsity (CSR, random pattern; the 400x10 head stays dense), batch 128, Adam, one MNIST epoch;
sparse inference on a batch of 1,000; and one training step (forward, backward, SGD update of
the stored values) of the 95% model in Sparana and with PyTorch's sparse CSR tensors.
Targets: epoch at 95% >= 6x faster than dense, at 99% >= 15x; inference at 95% >= 5x.

``--kernels``: GFLOP/s of each sparse kernel (SpMM, its transpose, SDDMM) over the model's three
sparse layers, batch 128 and 1,000, against NumPy's float32 GEMM rate measured in the same run.

``--busy``: a training step (batch 128, SGD) of the dense, 95% and 99% models (the median of 200
steps), on the quiet machine and beside one competing busy process (a Python busy loop), in one
run. Target: with the one core taken, each step is at most 2x slower than on the quiet machine.

``--bound``: each speed-up target beside the most the kernels' design allows. A training step (as
in the epoch) of the dense, 95% and 99% models, its sparse products timed apart from the rest, and
inference; then the speed-ups if the products ran at the ceiling rate (the kernels' inner loop on one
batch tile, with none of their work per row, on every core: printed by ``--kernels`` too), with the
rest of the step as measured, and with no rest at all.

``--baseline DIR``: run every contender also with the Sparana found in DIR (a checkout of an
earlier commit), alternating with this one, and add the columns for it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of, emit, gemm_rate, run_worker, sparse_documentation_model, table  # noqa: E402

BATCH = 128
SIZES = (784, 1000, 800, 400, 10)


def sparana_epoch(density):
    import sparana as sa

    loader = sa.Loader.from_mnist(sa.load_mnist(), seed=0, one_hot=False)
    model = sparse_documentation_model(density)
    optimizer = sa.AdamOptimizer(model, 1e-3)
    for _ in range(5):
        optimizer.train_step(*loader.minibatch(BATCH))
    steps = loader.training_size // BATCH
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.train_step(*loader.minibatch(BATCH))
    return {"seconds": time.perf_counter() - start, "steps": steps}


def sparana_inference(density, repeats=30):
    import sparana as sa

    x = _test_images(sa.load_mnist())
    model = sparse_documentation_model(density)
    return {"seconds": _best(lambda: model.outputs(x), repeats)}


def _test_images(mnist):
    """The first 1,000 MNIST test images, as floats in [0, 1]: the inference benchmarks' batch."""
    return mnist.test.images[:1000].astype("float32") / 255


def sparana_sgd_step(density, repeats=30):
    import sparana as sa

    loader = sa.Loader.from_mnist(sa.load_mnist(), seed=0, one_hot=False)
    model = sparse_documentation_model(density)
    optimizer = sa.SGDOptimizer(model, 1e-2)
    x, y = loader.minibatch(BATCH)
    return {"seconds": _best(lambda: optimizer.train_step(x, y), repeats)}


def sparana_sgd_median(density, steps=200):
    """The median of ``steps`` training steps (SGD, batch 128) after a warm-up of a second: under
    contention the best step only says how fast a lucky one was."""
    import sparana as sa

    loader = sa.Loader.from_mnist(sa.load_mnist(), seed=0, one_hot=False)
    model = sparse_documentation_model(density)
    optimizer = sa.SGDOptimizer(model, 1e-2)
    x, y = loader.minibatch(BATCH)
    end = time.perf_counter() + 1.0  # compiles, and lets the thread choice see the machine
    while time.perf_counter() < end:
        optimizer.train_step(x, y)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        optimizer.train_step(x, y)
        times.append(time.perf_counter() - start)
    times.sort()
    return {"seconds": times[len(times) // 2], "best": times[0]}


def kernel_rates(_density, repeats=30):
    """GFLOP/s of spmm, spmm_t and sddmm summed over the three sparse layers, per density and batch."""
    import numpy as np
    import scipy.sparse

    from sparana.kernels import SparsePattern, cpu

    rng = np.random.default_rng(0)
    result = {"gemm": gemm_rate()}
    for density in (0.05, 0.01):
        layers = []
        for n_in, n_out in zip(SIZES[:3], SIZES[1:4]):
            matrix = scipy.sparse.random(n_out, n_in, density=density, format="csr", random_state=rng,
                                         dtype=np.float32)
            matrix.sort_indices()
            layers.append((matrix, SparsePattern(matrix.indptr, matrix.indices, matrix.shape)))
        for batch in (BATCH, 1000):
            seconds = dict.fromkeys(("spmm", "spmm_t", "sddmm"), 0.0)
            flops = 0
            for matrix, pattern in layers:
                n_out, n_in = matrix.shape
                x = _as_layers_hold(rng.standard_normal((n_in, batch), dtype=np.float32))
                grad = _as_layers_hold(rng.standard_normal((n_out, batch), dtype=np.float32))
                bias = rng.standard_normal(n_out, dtype=np.float32)
                out = _as_layers_hold(np.empty((n_out, batch), np.float32))
                out_t = _as_layers_hold(np.empty((n_in, batch), np.float32))
                sampled = np.empty(matrix.nnz, np.float32)
                seconds["spmm"] += _best(lambda: cpu.spmm(pattern, matrix.data, x, bias, True, out), repeats)
                seconds["spmm_t"] += _best(lambda: cpu.spmm_t(pattern, matrix.data, grad, out_t), repeats)
                seconds["sddmm"] += _best(lambda: cpu.sddmm(pattern, grad, x, sampled), repeats)
                flops += 2 * matrix.nnz * batch
            for kernel, s in seconds.items():
                result[f"{kernel} {density} {batch}"] = flops / s
    result["ceiling"] = gather_ceiling(rng, repeats)
    return result


def _as_layers_hold(array):
    """``array`` copied into a work array like those the layers give the kernels (aligned, where
    the library being measured aligns them)."""
    try:
        from sparana._backend import aligned_empty
    except ImportError:  # (a baseline from before aligned work arrays)
        return array
    copy = aligned_empty(array.shape, array.dtype)
    copy[...] = array
    return copy


def gather_ceiling(rng, repeats, picks=1 << 16):
    """FLOP/s of the loop the sparse products are made of, without their bookkeeping: rows of one
    batch tile (TILE_BYTES of float32 per row) of an operand as tall as each layer's input, picked at
    random, four a pass, multiply-added into sums held in registers; one such loop per core, on the
    cores the kernels use, compiled as the kernels are. It is the kernels' inner loop with none of
    their work per row (starting and storing each row's sums, the row's first and last entries):
    an estimate of the most their design reaches here."""
    import numba
    import numpy as np

    from sparana.kernels import cpu

    width, threads = cpu.TILE_BYTES // 4, max(1, numba.config.NUMBA_NUM_THREADS)
    kernel = _gather_on_each_core()
    seconds, flops = 0.0, 0
    for n_in in SIZES[:3]:
        x = _as_layers_hold(rng.standard_normal((n_in, width), dtype=np.float32))
        rows = rng.integers(0, n_in, (threads, picks)).astype(np.int32)
        weights = rng.standard_normal((threads, picks), dtype=np.float32)
        sums = np.empty((threads, width), np.float32)
        seconds += _best(lambda: kernel(x, rows, weights, sums), repeats)
        flops += 2 * rows.size * width
    return flops / seconds


def _gather_on_each_core():
    import numba

    from sparana.kernels import cpu

    options = dict(fastmath=True, error_model="numpy")

    @numba.njit(**options)
    def gather(x, rows, weights, sums):
        width = cpu._tile_width(x)
        acc = numba.carray(cpu._tile_on_stack(x), width)  # (in registers, as in the kernels)
        for j in range(width):
            acc[j] = 0
        for p in range(0, rows.size - 3, 4):
            w0, w1, w2, w3 = weights[p], weights[p + 1], weights[p + 2], weights[p + 3]
            x0, x1, x2, x3 = x[rows[p]], x[rows[p + 1]], x[rows[p + 2]], x[rows[p + 3]]
            for j in range(width):
                acc[j] += (w0 * x0[j] + w1 * x1[j]) + (w2 * x2[j] + w3 * x3[j])
        for j in range(width):
            sums[j] = acc[j]

    @numba.njit(parallel=True, **options)
    def on_each_core(x, rows, weights, sums):
        for t in numba.prange(rows.shape[0]):
            gather(x, rows[t], weights[t], sums[t])

    return on_each_core


def step_split(density, steps=300):
    """A training step as in the epoch (batch 128, Adam, the loader's batches): its seconds, and the
    seconds and FLOPs of its sparse products (SpMM, its transpose, SDDMM) timed apart; and the same
    for an inference on a batch of 1,000 test images (the best of 30, its products from one more)."""
    import numpy as np

    import sparana as sa
    from sparana._threads import core_threads
    from sparana.kernels import cpu

    calls = []  # (seconds, FLOPs) of each product; appended to from the evaluation's threads too

    def timed(kernel):
        def run(pattern, a, b, *rest):
            start = time.perf_counter()
            kernel(pattern, a, b, *rest)
            calls.append((time.perf_counter() - start, 2 * pattern.nnz * b.shape[1]))
        return run

    for name in ("spmm", "spmm_t", "sddmm"):
        setattr(cpu, name, timed(getattr(cpu, name)))
    mnist = sa.load_mnist()
    loader = sa.Loader.from_mnist(mnist, seed=0, one_hot=False)
    model = sparse_documentation_model(density)
    optimizer = sa.AdamOptimizer(model, 1e-3)
    for _ in range(20):
        optimizer.train_step(*loader.minibatch(BATCH))
    calls.clear()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.train_step(*loader.minibatch(BATCH))
    seconds = (time.perf_counter() - start) / steps
    products = np.array(calls).reshape(-1, 2).sum(axis=0) / steps
    x = _test_images(mnist)
    inference = _best(lambda: model.outputs(x), 30)
    calls.clear()
    model.outputs(x)
    # (the inference's chunks run on every core at once: its products' time is their sum per core)
    inference_products = np.array(calls).reshape(-1, 2).sum(axis=0) / [core_threads(), 1]
    return {"seconds": seconds,
            "step": {"seconds": seconds, "products": products[0], "flops": products[1]},
            "inference": {"seconds": inference, "products": inference_products[0], "flops": inference_products[1]}}


def ceiling_rate(_density, repeats=30):
    import numpy as np

    return {"rate": gather_ceiling(np.random.default_rng(0), repeats)}


def torch_csr_step(density, repeats=30):
    import numpy as np
    import torch

    import sparana as sa

    torch.manual_seed(0)
    loader = sa.Loader.from_mnist(sa.load_mnist(), seed=0, one_hot=False)
    x, y = loader.minibatch(BATCH)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    weights, biases = [], []
    for i, (n_in, n_out) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        dense = torch.randn(n_out, n_in) * (3 / (n_in + n_out)) ** 0.5
        if i < 3:
            dense = dense * (torch.rand(n_out, n_in) < density)
            weights.append(dense.to_sparse_csr().requires_grad_(True))
        else:
            weights.append(dense.requires_grad_(True))
        biases.append(torch.full((n_out, 1), 0.1, requires_grad=True))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        a = x.T  # feature-major, as Sparana's kernels
        for i, (w, b) in enumerate(zip(weights, biases)):
            z = (torch.sparse.mm(w, a) if i < 3 else w @ a) + b
            a = torch.relu(z) if i < 3 else z
        loss = loss_fn(a.T, y)
        for p in weights + biases:
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in weights + biases:
                if p.layout == torch.sparse_csr:
                    p.values().sub_(1e-2 * p.grad.values())
                else:
                    p.sub_(1e-2 * p.grad)

    warnings_off()
    return {"seconds": _best(step, repeats), "torch": torch.__version__, "nnz": int(sum(
        w._nnz() for w in weights[:3])), "numpy": np.__version__}


def warnings_off():
    import warnings

    warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")


def _best(function, repeats):
    for _ in range(3):
        function()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


WORKERS = {"epoch": sparana_epoch, "inference": sparana_inference, "sgd": sparana_sgd_step,
           "sgd-median": sparana_sgd_median, "kernels": kernel_rates, "torch-csr": torch_csr_step,
           "split": step_split, "ceiling": ceiling_rate}


@contextlib.contextmanager
def busy_process():
    """One competing process that keeps a core busy (a Python busy loop) while the block runs; it
    also ends when this process does, however that ends."""
    loop = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    pass"
    hog = subprocess.Popen([sys.executable, "-c", loop])
    try:
        time.sleep(0.2)
        yield
    finally:
        hog.kill()
        hog.wait()


def library_env(directory):
    """The environment that makes a worker import Sparana from ``directory`` (None: this checkout)."""
    env = dict(os.environ)
    if directory:
        env["PYTHONPATH"] = os.pathsep.join([str(Path(directory).resolve()), env.get("PYTHONPATH", "")])
    return env


def libraries(args):
    return {"": None, **({" (baseline)": args.baseline} if args.baseline else {})}


def kernels_table(args):
    """Each kernel's GFLOP/s (best of ``args.repeats`` runs) and its share of the GEMM rate measured
    in the same worker; with ``--baseline``, the baseline's beside it."""
    libs = libraries(args)
    best = {}
    for _ in range(args.repeats):
        for lib, directory in libs.items():
            r = run_worker(__file__, "kernels", 0, env=library_env(directory))
            for key, rate in r.items():
                if key != "peak_rss_mb" and rate > best.get((lib, key), (0, 0))[0]:
                    best[lib, key] = (rate, r["gemm"])
    headers = ["kernel", "sparsity", "batch"]
    for lib in libs:
        headers += [f"GFLOP/s{lib}", f"of GEMM{lib}"]
    rows = []
    for (lib, key), (rate, gemm) in best.items():
        if lib or key in ("gemm", "ceiling"):
            continue
        kernel, density, batch = key.split()
        row = [kernel, f"{(1 - float(density)) * 100:.0f}%", batch]
        for other in libs:
            rate, gemm = best[other, key]
            row += [f"{rate / 1e9:.1f}", f"{rate / gemm * 100:.0f}%"]
        rows.append(row)
    table(rows, headers)
    print("NumPy float32 GEMM (1024^3, all threads) in the same runs: " + ", ".join(
        f"{best[lib, 'gemm'][0] / 1e9:.0f} GFLOP/s{lib}" for lib in libs))
    print("Ceiling of the kernels' design (random rows of an L2-resident batch tile multiply-added in "
          "registers, one loop a core): " + ", ".join(
              f"{best[lib, 'ceiling'][0] / 1e9:.1f} GFLOP/s{lib} ({best[lib, 'ceiling'][0] / best[lib, 'gemm'][0]:.0%} "
              f"of GEMM)" for lib in libs if (lib, "ceiling") in best))


def busy_table(args):
    """Quiet and busy medians of a training step, alternating, best of ``args.repeats`` runs each."""
    steps = {"dense": 1.0, "95%": 0.05, "99%": 0.01}
    libs = libraries(args)
    medians = {}
    for _ in range(args.repeats):
        for lib, directory in libs.items():
            env = library_env(directory)
            for name, density in steps.items():
                for load in ("quiet", "busy"):
                    with busy_process() if load == "busy" else contextlib.nullcontext():
                        seconds = run_worker(__file__, "sgd-median", density, env=env)["seconds"]
                    key = (name, lib, load)
                    medians[key] = min(seconds, medians.get(key, float("inf")))
    rows = []
    for name in steps:
        for lib in libs:
            quiet, busy = medians[name, lib, "quiet"], medians[name, lib, "busy"]
            rows.append((f"step {name}{lib}", f"{quiet * 1e3:.2f} ms", f"{busy * 1e3:.2f} ms", f"{busy / quiet:.1f}x",
                         "<= 2" if not lib else ""))
    table(rows, ["run (batch 128, SGD; median of 200)", "quiet", "one core busy", "busy / quiet", "target"])
    worst = max(medians[name, "", "busy"] / medians[name, "", "quiet"] for name in steps)
    print(f"worst busy/quiet step ratio: {worst:.1f}x (target 2)")


def bound_table(args):
    """Each speed-up target beside the most the kernels' design allows: the sparse products at the
    ceiling rate of :func:`gather_ceiling`, with the rest of the step as measured, and with nothing
    else at all (best of ``args.repeats`` alternating runs)."""
    runs = {"dense": ["split", 1.0], "95%": ["split", 0.05], "99%": ["split", 0.01]}
    best = best_of(__file__, runs, args.repeats)
    ceiling = max(run_worker(__file__, "ceiling", 0)["rate"] for _ in range(args.repeats))
    rows = []
    for name, density, run, target in (("epoch step", "95%", "step", 6), ("epoch step", "99%", "step", 15),
                                       ("inference", "95%", "inference", 5)):
        dense, r = best["dense"][run]["seconds"], best[density][run]
        rest, at_ceiling = r["seconds"] - r["products"], r["flops"] / ceiling
        rows.append((f"{name} {density}", f"{r['seconds'] * 1e3:.2f} ms", f"{r['products'] * 1e3:.2f} ms",
                     f"{rest * 1e3:.2f} ms", f"{dense / r['seconds']:.1f}x", f"{dense / (rest + at_ceiling):.1f}x",
                     f"{dense / at_ceiling:.1f}x", f">= {target}"))
    table(rows, ["run", "time", "products", "rest", "speed-up", "products at ceiling",
                 "products at ceiling, no rest", "target"])
    print(f"dense step {best['dense']['step']['seconds'] * 1e3:.2f} ms, dense inference "
          f"{best['dense']['inference']['seconds'] * 1e3:.2f} ms; ceiling {ceiling / 1e9:.1f} GFLOP/s; "
          f"best of {args.repeats}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--kernels", action="store_true", help="GFLOP/s of each kernel against GEMM")
    parser.add_argument("--busy", action="store_true", help="training steps quiet and beside a busy process")
    parser.add_argument("--bound", action="store_true", help="each target beside the most the kernels' design allows")
    parser.add_argument("--baseline", metavar="DIR", help="also run the Sparana of this checkout")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "DENSITY"))
    args = parser.parse_args()
    if args.worker:
        kind, density = args.worker
        emit(WORKERS[kind](float(density)))
        return
    if args.kernels:
        kernels_table(args)
        return
    if args.busy:
        busy_table(args)
        return
    if args.bound:
        bound_table(args)
        return
    runs = {
        "epoch dense": ["epoch", 1.0], "epoch 95%": ["epoch", 0.05], "epoch 99%": ["epoch", 0.01],
        "inference dense": ["inference", 1.0], "inference 95%": ["inference", 0.05],
        "step sparana 95%": ["sgd", 0.05], "step torch CSR 95%": ["torch-csr", 0.05],
    }
    libs = libraries(args)
    best = {}
    for _ in range(args.repeats):  # alternate the libraries, each run also alternating its contenders
        for lib, directory in libs.items():
            found = best_of(__file__, runs, 1, env=library_env(directory))
            for name, result in found.items():
                key = name + lib
                if key not in best or result["seconds"] < best[key]["seconds"]:
                    best[key] = result
    s = {name: r["seconds"] for name, r in best.items()}
    ratios, targets = {}, {}
    for lib in libs:
        ratios.update({
            "epoch 95%" + lib: s["epoch dense" + lib] / s["epoch 95%" + lib],
            "epoch 99%" + lib: s["epoch dense" + lib] / s["epoch 99%" + lib],
            "inference 95%" + lib: s["inference dense" + lib] / s["inference 95%" + lib],
            "step torch CSR 95%" + lib: s["step torch CSR 95%" + lib] / s["step sparana 95%" + lib],
        })
    targets = {"epoch 95%": ">= 6", "epoch 99%": ">= 15", "inference 95%": ">= 5", "step torch CSR 95%": "(> 1: Sparana faster)"}
    rows = []
    for name, seconds in s.items():
        unit = f"{seconds:.2f} s" if seconds > 1 else f"{seconds * 1e3:.2f} ms"
        ratio = f"{ratios[name]:.1f}x" if name in ratios else ""
        rows.append((name, unit, ratio, targets.get(name, ""), f"{best[name]['peak_rss_mb']:.0f}"))
    table(rows, ["run", "time", "speed-up", "target", "peak MB"])
    print(f"torch {best['step torch CSR 95%']['torch']}; best of {args.repeats}")
    print(f"sparse/dense epoch speed-up at 95%: {ratios['epoch 95%']:.1f}x (target 6), at 99%: "
          f"{ratios['epoch 99%']:.1f}x (target 15); inference at 95%: {ratios['inference 95%']:.1f}x (target 5); "
          f"Sparana vs PyTorch CSR step: {ratios['step torch CSR 95%']:.1f}x")


if __name__ == "__main__":
    main()
