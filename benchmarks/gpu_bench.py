"""GPU benchmark (CuPy): the documentation's model on synthetic MNIST-shaped data.

    python benchmarks/gpu_bench.py          # from the source tree: PYTHONPATH=. (make gpu-check)

One epoch (468 steps of batch 128, Adam) dense in Sparana and in PyTorch CUDA, Sparana at 95% and
99% sparsity (CSR hidden layers, cuSPARSE), and inference on a batch of 1,000, side by side in one
run. Data are random (the machine may not reach MNIST's mirrors); batches start on the host in
both frameworks. Runs in well under 8 minutes on one GPU.
"""

from __future__ import annotations

import time

import numpy as np

import sparana as sa

STEPS = 468
BATCH = 128


def data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (60000, 784), dtype=np.uint8), rng.integers(0, 10, 60000)


def sparana_model(density):
    model = sa.documentation_model(comp_type="CPU", seed=0)
    if density < 1:
        model.initialize_sparse_weights([density] * 3 + [1.0], bias_constant=0.1)
        model.layers[3].prune_mask = None
        model.convert_to_sparse([0, 1, 2])
    model.convert_comp_type("GPU")
    return model


def synchronize():
    import cupy

    cupy.cuda.Device().synchronize()


def sparana_epoch(density, images, labels):
    model = sparana_model(density)
    loader = sa.Loader(images, labels, images[:1000], labels[:1000], seed=0, one_hot=False)
    optimizer = sa.AdamOptimizer(model, 1e-3)
    for _ in range(10):
        optimizer.train_step(*loader.minibatch(BATCH))
    synchronize()
    start = time.perf_counter()
    for _ in range(STEPS):
        optimizer.train_step(*loader.minibatch(BATCH))
    synchronize()
    epoch = time.perf_counter() - start
    x = images[:1000].astype(np.float32) / 255
    model.outputs(x)
    synchronize()
    start = time.perf_counter()
    for _ in range(20):
        model.outputs(x)
    synchronize()
    return epoch, (time.perf_counter() - start) / 20


def torch_epoch(images, labels):
    import torch

    torch.manual_seed(0)
    sizes = (784, 1000, 800, 400, 10)
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1]).cuda()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    x_all = torch.from_numpy(images)
    y_all = torch.from_numpy(labels)
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


def main():
    if not sa.gpu_available():
        raise SystemExit("no GPU: this benchmark needs CuPy and a CUDA device")
    images, labels = data()
    dense, dense_inference = sparana_epoch(1.0, images, labels)
    sparse95, inference95 = sparana_epoch(0.05, images, labels)
    sparse99, _ = sparana_epoch(0.01, images, labels)
    rows = [("Sparana dense", dense, dense_inference), ("Sparana 95%", sparse95, inference95),
            ("Sparana 99%", sparse99, None)]
    try:
        torch_time, version = torch_epoch(images, labels)
        rows.append((f"PyTorch {version} dense", torch_time, None))
    except Exception as exc:  # PyTorch is only a comparison; report why it is missing
        torch_time = None
        print(f"PyTorch CUDA comparison skipped: {exc}")
    print(f"{'run':<28} {'epoch s':>8} {'infer ms':>9}")
    for name, seconds, inference in rows:
        print(f"{name:<28} {seconds:>8.3f} {'' if inference is None else f'{inference * 1e3:9.2f}':>9}")
    print(f"GPU sparse/dense epoch speed-up: 95% {dense / sparse95:.1f}x, 99% {dense / sparse99:.1f}x; "
          f"inference 95% {dense_inference / inference95:.1f}x")
    if torch_time:
        print(f"Sparana/PyTorch GPU dense epoch time ratio: {dense / torch_time:.2f}")


if __name__ == "__main__":
    main()
