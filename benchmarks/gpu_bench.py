"""GPU benchmark (CuPy, Numba CUDA kernels) against PyTorch CUDA, side by side in one run.

    python benchmarks/gpu_bench.py [--json results/gpu_bench.json]   # make gpu-check runs it

1. The documentation's MLP (784-1000-800-400-10, batch 128, Adam, float32, TF32 off in both): one
   epoch (468 steps) dense in Sparana and in PyTorch, Sparana at 95% and 99% sparsity (CSR hidden
   layers), and inference on a batch of 1,000. Batches start on the host in both frameworks.
   Target: Sparana dense within 1.5x of PyTorch's epoch.
2. A wide network, 784-16384-16384-10 at batch 256 (268 million weights dense): a training step
   (Adam) dense against 99% sparse hidden layers. Target: the sparse step at least 5x faster.
3. The sparse kernels on its 16384 x 16384 layer at 99%: SpMM, transposed SpMM and SDDMM, in
   GFLOP/s (2 nnz batch floating-point operations each) as a fraction of the H200's FP32 peak
   (about 67 TFLOP/s), and in GB/s of the bytes they must move at least (values, indices, the
   dense operands and results once) as a fraction of its memory bandwidth (about 4.8 TB/s).

Data are random (the GPU machine reaches no mirror). The figures are printed as a table and
written as JSON; the last line is the headline.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import sparana as sa

STEPS = 468
BATCH = 128
WIDE = (784, 16384, 16384, 10)
WIDE_BATCH = 256
PEAK_FLOPS = 67e12
PEAK_BYTES = 4.8e12


def synchronize():
    import cupy

    cupy.cuda.Device().synchronize()


def timed(function, repeats, warm=3):
    """Seconds per call of ``function`` (after ``warm`` calls), the device synchronised around."""
    for _ in range(warm):
        function()
    synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    synchronize()
    return (time.perf_counter() - start) / repeats


def data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (60000, 784), dtype=np.uint8), rng.integers(0, 10, 60000)


def model_of(sizes, density, seed=0):
    """A ReLU MLP of ``sizes`` on the GPU, its hidden layers CSR at ``density`` (< 1) or dense."""
    kind = sa.SparseReluLayer if density < 1 else sa.DenseReluLayer
    layers = [kind(n) for n in sizes[1:-1]] + [sa.DenseLinearLayer(sizes[-1])]
    model = sa.Model(sizes[0], layers, comp_type="CPU", seed=seed)
    if density < 1:
        model.initialize_sparse_weights([density] * (len(sizes) - 2) + [1.0], bias_constant=0.1)
        model.layers[-1].prune_mask = None
    else:
        model.initialize_weights("Xavier", bias_constant=0.1)
    model.convert_comp_type("GPU")
    return model


def sparana_epoch(density, images, labels):
    model = model_of((784, 1000, 800, 400, 10), density)
    loader = sa.Loader(images, labels, images[:1000], labels[:1000], seed=0, one_hot=False)
    optimizer = sa.AdamOptimizer(model, 1e-3)
    epoch = timed(lambda: optimizer.train_step(*loader.minibatch(BATCH)), STEPS, warm=10) * STEPS
    x = images[:1000].astype(np.float32) / 255
    return epoch, timed(lambda: model.outputs(x), 20)


def torch_epoch(images, labels):
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    sizes = (784, 1000, 800, 400, 10)
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1]).cuda()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    rng = np.random.default_rng(0)

    def step():
        index = torch.from_numpy(rng.choice(len(images), BATCH, replace=False))
        x = (x_all[index].float() / 255).cuda()
        y = y_all[index].cuda()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

    for _ in range(10):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(STEPS):
        step()
    torch.cuda.synchronize()
    return time.perf_counter() - start, torch.__version__


def wide_step(density):
    """Seconds per Adam step of the wide network on a device batch, and the model."""
    import cupy

    model = model_of(WIDE, density)
    rng = np.random.default_rng(1)
    x = cupy.asarray(rng.random((WIDE_BATCH, WIDE[0]), dtype=np.float32))
    y = cupy.asarray(rng.integers(0, WIDE[-1], WIDE_BATCH))
    optimizer = sa.AdamOptimizer(model, 1e-3)
    return timed(lambda: optimizer.train_step(x, y), 10), model


def kernel_rates(model):
    """GFLOP/s and GB/s of the three sparse kernels on the model's 16384 x 16384 layer."""
    import cupy

    layer = model.layers[1]
    pattern, data, kernels = layer.pattern, layer.values, layer.backend.kernels
    n_out, n_in = pattern.shape
    rng = np.random.default_rng(2)
    x = cupy.asarray(rng.standard_normal((n_in, WIDE_BATCH), dtype=np.float32))
    grad = cupy.asarray(rng.standard_normal((n_out, WIDE_BATCH), dtype=np.float32))
    out, out_t, out_w = (cupy.empty((n_out, WIDE_BATCH), np.float32), cupy.empty((n_in, WIDE_BATCH), np.float32),
                         cupy.empty(pattern.nnz, np.float32))
    flops = 2.0 * pattern.nnz * WIDE_BATCH
    index_bytes = pattern.indices.itemsize
    entry_bytes = pattern.nnz * (4 + index_bytes)
    dense_bytes = 4 * WIDE_BATCH * (n_in + n_out)
    runs = {
        "spmm": (lambda: kernels.spmm(pattern, data, x, layer.biases, True, out), entry_bytes + dense_bytes),
        "spmm_t": (lambda: kernels.spmm_t(pattern, data, grad, out_t), entry_bytes + pattern.nnz * index_bytes
                   + dense_bytes),
        "sddmm": (lambda: kernels.sddmm(pattern, grad, x, out_w), pattern.nnz * (4 + 2 * index_bytes) + dense_bytes),
    }
    rates = {}
    for name, (run, moved) in runs.items():
        seconds = timed(run, 20)
        rates[name] = {"ms": seconds * 1e3, "gflops": flops / seconds / 1e9, "peak_fraction": flops / seconds / PEAK_FLOPS,
                       "gbytes_per_s": moved / seconds / 1e9, "bandwidth_fraction": moved / seconds / PEAK_BYTES}
    return rates


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default="results/gpu_bench.json", help="where the figures go")
    args = parser.parse_args()
    if not sa.gpu_available():
        raise SystemExit("no GPU: this benchmark needs CuPy and a CUDA device")
    import cupy

    figures = {"device": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(), "cupy": cupy.__version__}
    images, labels = data()
    dense, dense_inference = sparana_epoch(1.0, images, labels)
    sparse95, inference95 = sparana_epoch(0.05, images, labels)
    sparse99, inference99 = sparana_epoch(0.01, images, labels)
    figures["documentation_mlp"] = {"dense_epoch_s": dense, "sparse95_epoch_s": sparse95, "sparse99_epoch_s": sparse99,
                                    "dense_inference_ms": dense_inference * 1e3, "sparse95_inference_ms": inference95 * 1e3,
                                    "sparse99_inference_ms": inference99 * 1e3}
    try:
        torch_time, version = torch_epoch(images, labels)
        figures["documentation_mlp"].update(torch_epoch_s=torch_time, torch=version,
                                            sparana_over_torch=dense / torch_time)
    except Exception as exc:  # PyTorch is only a comparison: say why it is missing
        print(f"PyTorch CUDA comparison skipped: {exc}")
    dense_wide, _ = wide_step(1.0)
    sparse_wide, model = wide_step(0.01)
    figures["wide"] = {"sizes": WIDE, "batch": WIDE_BATCH, "dense_step_ms": dense_wide * 1e3,
                       "sparse99_step_ms": sparse_wide * 1e3, "speedup": dense_wide / sparse_wide,
                       "kernels": kernel_rates(model)}
    report(figures)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


def report(f):
    mlp, wide = f["documentation_mlp"], f["wide"]
    print(f"{f['device']}, CuPy {f['cupy']}")
    print(f"\n{'documentation MLP, batch 128':<32} {'epoch s':>8} {'infer ms':>9}")
    for name, key, inference in (("Sparana dense", "dense", "dense"), ("Sparana 95%", "sparse95", "sparse95"),
                                 ("Sparana 99%", "sparse99", "sparse99")):
        print(f"{name:<32} {mlp[key + '_epoch_s']:>8.3f} {mlp[inference + '_inference_ms']:>9.2f}")
    if "torch_epoch_s" in mlp:
        print(f"{'PyTorch ' + mlp['torch'] + ' dense':<32} {mlp['torch_epoch_s']:>8.3f}")
        print(f"Sparana/PyTorch dense epoch: {mlp['sparana_over_torch']:.2f} (target <= 1.5)")
    print(f"\n784-16384-16384-10, batch 256: step dense {wide['dense_step_ms']:.2f} ms, 99% sparse "
          f"{wide['sparse99_step_ms']:.2f} ms")
    print(f"{'kernel (16384 x 16384, 99%)':<28} {'ms':>7} {'GFLOP/s':>9} {'of peak':>8} {'GB/s':>7} {'of HBM':>7}")
    for name, k in wide["kernels"].items():
        print(f"{name:<28} {k['ms']:>7.3f} {k['gflops']:>9.0f} {k['peak_fraction']:>7.1%} {k['gbytes_per_s']:>7.0f} "
              f"{k['bandwidth_fraction']:>6.1%}")
    print(f"wide network at 99%: sparse step {wide['speedup']:.1f}x faster than dense (target >= 5)")


if __name__ == "__main__":
    main()
