"""A million neurons on two cores: a truly sparse MLP trained with SET rewiring on MNIST.

    python benchmarks/million_neurons.py            # 784-100000-900000-10, Erdős–Rényi epsilon 10
    python benchmarks/million_neurons.py --hidden 500000 500000

The hidden layers are CSR from the first step (Erdős–Rényi densities from ``--epsilon``: a layer
stores about epsilon * (n_in + n_out) weights; the head, which that rule makes dense, is a dense
layer), weights scaled by each unit's live fan-in, trained for one epoch with Adam and SET
rewiring every ``--every`` steps. Dense, the 100000 x 900000 layer alone would need 360 GB of
float32 weights.

Why that shape: each stored weight of a product picks a row of its dense operand (a feature
across the batch, 512 bytes at batch 128), at random. Where the operand is larger than the
cache, every pick is a read from memory and the product runs at the memory's bandwidth
(about 16 GB/s here). A 100000-wide input (51 MB at batch 128) stays in the cache for the
forward product and the weight gradient of the big layer; only its transposed product reads a
900000-wide operand from memory. With two layers of 500000 all three products of the
500000 x 500000 layer stream from memory (measured: 613 s per epoch against 483 s). Prints the time per epoch (training and rewiring; building the network and
testing are timed apart), the peak memory of the process, the test accuracy, the FLOPs and the
rate the sparse products ran at, and as last line
``N neurons, W weights: S s per epoch, M GB peak, accuracy A``.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

import sparana as sa


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, nargs="+", default=[100_000, 900_000], help="hidden layer sizes")
    parser.add_argument("--epsilon", type=float, default=10.0, help="Erdős–Rényi epsilon")
    parser.add_argument("--batch-size", type=int, default=128,
                        help="samples a step (the products are bound by memory traffic per sample; 128 made the fastest epoch)")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's rate")
    parser.add_argument("--every", type=int, default=200, help="steps between SET rewirings")
    parser.add_argument("--fraction", type=float, default=0.3, help="share rewired at first (cosine decay)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-batch", type=int, default=500, help="test rows per forward pass (memory)")
    return parser.parse_args(argv)


def peak_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def build(args):
    sizes = [784, *args.hidden, 10]
    layers = [sa.SparseReluLayer(n) for n in args.hidden] + [sa.DenseLinearLayer(10)]
    model = sa.Model(784, layers, comp_type="CPU", seed=args.seed)
    densities = model.initialize_sparse_weights(None, "Xavier", bias_constant=0.1, distribution="erdos_renyi",
                                                epsilon=args.epsilon)
    head = model.layers[-1]
    if densities[-1] < 1.0:
        raise ValueError(f"the head's Erdős–Rényi density is {densities[-1]:.3f}: this benchmark keeps it dense, "
                         f"use a larger epsilon (>= 10 for 10 classes)")
    head.prune_mask = None  # the rule made it dense
    return model, sizes, densities


def accuracy(model, images, labels, rows):
    hits = 0
    for start in range(0, len(images), rows):
        outputs = model.outputs(images[start:start + rows])
        hits += int((np.asarray(outputs).argmax(axis=1) == labels[start:start + rows]).sum())
    return hits / len(images)


def main(argv=None):
    args = parse(argv)
    began = time.perf_counter()
    model, sizes, densities = build(args)
    built = time.perf_counter() - began
    weights = sum(layer.nnz for layer in model.layers)
    neurons = sum(args.hidden)
    print(f"layers {sizes}, densities {[f'{d:.2e}' for d in densities]}, stored weights per layer "
          f"{[layer.nnz for layer in model.layers]}; built in {built:.1f} s, {peak_gb():.2f} GB peak so far",
          flush=True)
    loader = sa.Loader.from_mnist(sa.load_mnist(), seed=args.seed, one_hot=False)
    optimizer = sa.AdamOptimizer(model, args.learning_rate)
    steps = int(args.epochs * (loader.training_size // args.batch_size))
    rewirer = sa.Rewirer(model, "SET", args.fraction, every=args.every, schedule="cosine", end=steps,
                         seed=args.seed, optimizer=optimizer)
    rewire_seconds, start = 0.0, time.perf_counter()
    for step in range(1, steps + 1):
        optimizer.train_step(*loader.minibatch(args.batch_size))
        mark = time.perf_counter()
        if rewirer.step() is not None:
            rewire_seconds += time.perf_counter() - mark
            print(f"step {step}: rewired {sum(rewirer.history[-1]['replaced'])} weights in "
                  f"{time.perf_counter() - mark:.1f} s; {time.perf_counter() - start:.0f} s so far", flush=True)
        elif step % 100 == 0:
            print(f"step {step}/{steps}: {time.perf_counter() - start:.0f} s", flush=True)
    epoch = (time.perf_counter() - start) / args.epochs
    mark = time.perf_counter()
    test = accuracy(model, loader.test_data(), loader.test_labels(), args.eval_batch)
    tested = time.perf_counter() - mark
    # Arithmetic: the forward SpMM and the SDDMM of every sparse layer, the transposed SpMM of all
    # but the first (its input gradient is not needed), 2 FLOPs per stored weight and sample.
    sparse = [layer for layer in model.layers if layer.is_sparse]
    products = sum(layer.nnz * (2 if i == 0 else 3) for i, layer in enumerate(sparse))
    flops = 2.0 * products * args.batch_size * steps
    train = epoch * args.epochs - rewire_seconds
    print(f"training {train:.0f} s ({steps} steps of {args.batch_size}, {train / steps * 1e3:.0f} ms each), "
          f"rewiring {rewire_seconds:.1f} s ({len(rewirer.history)} SET steps), test {tested:.0f} s")
    # Bytes: each stored weight of a product reads a batch row of its dense operand (4 bytes a sample).
    picked = products * args.batch_size * 4 * steps
    print(f"sparse products: {flops / 1e12:.2f} TFLOP per epoch, {flops / train / 1e9:.1f} GFLOP/s over the "
          f"training time; their stored weights pick {picked / 1e12:.1f} TB of operand rows per epoch "
          f"({picked / train / 1e9:.1f} GB/s), from memory where the operand exceeds the cache")
    dense_bytes = sum(n_in * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:])) * 4
    print(f"dense, the same network's weights would take {dense_bytes / 1e9:.0f} GB")
    print(f"{neurons} neurons, {weights} weights: {epoch:.0f} s per epoch, {peak_gb():.2f} GB peak, accuracy {test:.4f}")


if __name__ == "__main__":
    main()
