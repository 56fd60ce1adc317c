"""One MNIST epoch of the documentation's 784-1000-800-400-10 model, batch 128, Adam 1e-3:
Sparana against PyTorch's CPU build, side by side, and against the arithmetic floor.

    python benchmarks/dense_epoch.py [--repeats 2]

Target: Sparana no slower than PyTorch (ratio <= 1.0), peak memory under 1.5 GB.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of, emit, gemm_rate, table  # noqa: E402

SIZES = (784, 1000, 800, 400, 10)
BATCH = 128


def sparana_epoch():
    import sparana as sa

    data = sa.load_mnist()
    loader = sa.Loader.from_mnist(data, seed=0, one_hot=False)
    model = sa.documentation_model(comp_type="CPU", seed=0)
    optimizer = sa.AdamOptimizer(model, 1e-3)
    steps = loader.training_size // BATCH
    for _ in range(5):  # warm-up: compile the kernels
        optimizer.train_step(*loader.minibatch(BATCH))
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.train_step(*loader.minibatch(BATCH))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "steps": steps,
            "accuracy": model.get_accuracy(loader.test_data(), loader.test_labels())}


def torch_epoch():
    import numpy as np
    import torch

    import sparana as sa

    torch.manual_seed(0)
    images, labels, test_images, test_labels = sa.load_mnist().as_arrays()
    x = torch.from_numpy(images.astype(np.float32) / 255)
    y = torch.from_numpy(labels.astype(np.int64))
    layers = []
    for n_in, n_out in zip(SIZES[:-1], SIZES[1:]):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    steps = len(x) // BATCH

    def step(index):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x[index]), y[index]).backward()
        optimizer.step()

    for i in range(5):
        step(torch.arange(i * BATCH, (i + 1) * BATCH))
    order = torch.randperm(len(x))
    start = time.perf_counter()
    for i in range(steps):
        step(order[i * BATCH:(i + 1) * BATCH])
    seconds = time.perf_counter() - start
    with torch.no_grad():
        tx = torch.from_numpy(test_images.astype(np.float32) / 255)
        accuracy = (model(tx).argmax(1).numpy() == test_labels).mean()
    return {"seconds": seconds, "steps": steps, "accuracy": float(accuracy),
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worker", choices=["sparana", "torch"])
    args = parser.parse_args()
    if args.worker:
        emit(sparana_epoch() if args.worker == "sparana" else torch_epoch())
        return
    best = best_of(__file__, {"sparana": ["sparana"], "torch": ["torch"]}, args.repeats)
    steps = best["sparana"]["steps"]
    params = sum(a * b for a, b in zip(SIZES[:-1], SIZES[1:]))
    first = SIZES[0] * SIZES[1]
    flops = steps * BATCH * (6 * params - 2 * first)  # forward 2, backward 4, no input gradient for layer 1
    floor = flops / gemm_rate()
    rows = [(name, f"{r['seconds']:.2f}", f"{r['seconds'] / floor:.2f}", f"{r['peak_rss_mb']:.0f}",
             f"{r['accuracy']:.4f}") for name, r in best.items()]
    rows.append(("arithmetic floor", f"{floor:.2f}", "1.00", "", ""))
    table(rows, ["contender", "epoch s", "x floor", "peak MB", "test acc"])
    ratio = best["sparana"]["seconds"] / best["torch"]["seconds"]
    print(f"torch {best['torch']['torch']} with {best['torch']['threads']} threads; best of {args.repeats}")
    print(f"Sparana/PyTorch epoch time ratio: {ratio:.2f} (target <= 1.0), "
          f"Sparana peak memory {best['sparana']['peak_rss_mb']:.0f} MB (target < 1500)")


if __name__ == "__main__":
    main()
