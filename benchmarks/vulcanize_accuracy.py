"""Vulcanized training on Ray workers against one-process training that saw as many samples.

    python benchmarks/vulcanize_accuracy.py [--workers 2 --rounds 10 --local-steps 100]

From the same initial documentation model: (a) every round the driver splits all layers into
one disjoint submodel per worker, each worker trains its submodel on its shard for
--local-steps minibatches of 128 (fresh Adam 1e-3), and the driver melds them back; (b) one
process trains the whole model with Adam 1e-3 for workers x rounds x local-steps minibatches of
128, so it sees as many samples. Target: (a) ends within 0.5 points of (b).
"""

from __future__ import annotations

import argparse
import time

import sparana as sa
from sparana import cluster


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--local-steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cluster.init(num_cpus=2, local_mode=True)
    workers = cluster.ray_workers(args.workers, seed=args.seed, experiment="bench-vulcanize",
                                  cpus_per_worker=2 / args.workers)
    start = time.perf_counter()
    model = sa.documentation_model(comp_type="CPU", seed=args.seed)
    result = cluster.vulcanize(model, workers, None, args.rounds, args.local_steps, progress=False, seed=args.seed)
    vulcanized_seconds = time.perf_counter() - start
    workers.shutdown()
    cluster.shutdown()
    steps = args.workers * args.rounds * args.local_steps
    loader = sa.Loader.from_mnist(sa.load_mnist(), seed=args.seed)
    reference = sa.documentation_model(comp_type="CPU", seed=args.seed)
    start = time.perf_counter()
    history = sa.fit(sa.AdamOptimizer(reference, 1e-3), loader, 128, steps=steps, progress=False,
                     evaluate_every=steps // args.rounds)
    one_seconds = time.perf_counter() - start
    print(f"{'round':>5} {'vulcanized':>10} {'one process':>11}")
    for r, accuracy in zip(result.rounds, history.accuracy):
        print(f"{r['round']:>5} {r['accuracy']:>10.4f} {accuracy:>11.4f}")
    gap = 100 * (history.accuracy[-1] - result.accuracy)
    print(f"{args.workers} workers x {args.rounds} rounds x {args.local_steps} steps = {steps} minibatches of 128 "
          f"each way; wall {vulcanized_seconds:.0f} s vulcanized, {one_seconds:.0f} s one process")
    print(f"vulcanized {result.accuracy:.4f} vs one process {history.accuracy[-1]:.4f}: one process ahead by "
          f"{gap:+.2f} points (target: at most 0.5)")


if __name__ == "__main__":
    main()
