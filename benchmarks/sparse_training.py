"""Truly sparse training and inference against dense, and against PyTorch's sparse CSR tensors.

    python benchmarks/sparse_training.py [--repeats 2]

The documentation's model 784-1000-800-400-10 with its three hidden layers at 95% and 99%
sparsity (CSR, random pattern; the 400x10 head stays dense), batch 128, Adam, one MNIST epoch;
sparse inference on a batch of 1,000; and one training step (forward, backward, SGD update of
the stored values) of the 95% model in Sparana and with PyTorch's sparse CSR tensors.
Targets: epoch at 95% >= 4x faster than dense, at 99% >= 10x; inference at 95% >= 5x.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of, emit, table  # noqa: E402

BATCH = 128
SIZES = (784, 1000, 800, 400, 10)


def sparana_model(density):
    import sparana as sa

    model = sa.documentation_model(comp_type="CPU", seed=0)
    if density < 1:
        model.initialize_sparse_weights([density] * 3 + [1.0], "Xavier", bias_constant=0.1)
        model.convert_to_sparse([0, 1, 2])
        model.layers[3].prune_mask = None
    return model


def sparana_epoch(density):
    import sparana as sa

    loader = sa.Loader.from_mnist(sa.load_mnist(), seed=0, one_hot=False)
    model = sparana_model(density)
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

    x = sa.load_mnist().test.images[:1000].astype("float32") / 255
    model = sparana_model(density)
    return {"seconds": _best(lambda: model.outputs(x), repeats)}


def sparana_sgd_step(density, repeats=30):
    import sparana as sa

    loader = sa.Loader.from_mnist(sa.load_mnist(), seed=0, one_hot=False)
    model = sparana_model(density)
    optimizer = sa.SGDOptimizer(model, 1e-2)
    x, y = loader.minibatch(BATCH)
    return {"seconds": _best(lambda: optimizer.train_step(x, y), repeats)}


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
           "torch-csr": torch_csr_step}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "DENSITY"))
    args = parser.parse_args()
    if args.worker:
        kind, density = args.worker
        emit(WORKERS[kind](float(density)))
        return
    runs = {
        "epoch dense": ["epoch", 1.0], "epoch 95%": ["epoch", 0.05], "epoch 99%": ["epoch", 0.01],
        "inference dense": ["inference", 1.0], "inference 95%": ["inference", 0.05],
        "step sparana 95%": ["sgd", 0.05], "step torch CSR 95%": ["torch-csr", 0.05],
    }
    best = best_of(__file__, runs, args.repeats)
    s = {name: r["seconds"] for name, r in best.items()}
    ratios = {
        "epoch 95%": s["epoch dense"] / s["epoch 95%"], "epoch 99%": s["epoch dense"] / s["epoch 99%"],
        "inference 95%": s["inference dense"] / s["inference 95%"],
        "step torch CSR 95%": s["step torch CSR 95%"] / s["step sparana 95%"],
    }
    targets = {"epoch 95%": ">= 4", "epoch 99%": ">= 10", "inference 95%": ">= 5", "step torch CSR 95%": "(> 1: Sparana faster)"}
    rows = []
    for name, seconds in s.items():
        unit = f"{seconds:.2f} s" if seconds > 1 else f"{seconds * 1e3:.2f} ms"
        ratio = f"{ratios[name]:.1f}x" if name in ratios else ""
        rows.append((name, unit, ratio, targets.get(name, ""), f"{best[name]['peak_rss_mb']:.0f}"))
    table(rows, ["run", "time", "speed-up", "target", "peak MB"])
    print(f"torch {best['step torch CSR 95%']['torch']}; best of {args.repeats}")
    print(f"sparse/dense epoch speed-up at 95%: {ratios['epoch 95%']:.1f}x (target 4), at 99%: "
          f"{ratios['epoch 99%']:.1f}x (target 10); inference at 95%: {ratios['inference 95%']:.1f}x (target 5); "
          f"Sparana vs PyTorch CSR step: {ratios['step torch CSR 95%']:.1f}x")


if __name__ == "__main__":
    main()
