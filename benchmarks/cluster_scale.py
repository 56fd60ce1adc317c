"""Rounds with many workers on a simulated multi-node GPU cluster: what reaches the driver.

    python benchmarks/cluster_scale.py [--workers 2 4 8 16] [--rounds 3] [--local-steps 2]

A head and four nodes of 4 CPUs and 4 GPUs each are started on this machine
(the GPUs are declared, the workers compute with NumPy). For each number of
workers, ``train_and_mix`` of the documentation's model (7.6 MB in float32)
runs a few rounds of few local steps, and per round (median after the first)
the table gives:

* driver MB: array bytes the driver received (the reduced contribution and
  the figures), against what driver-side mixing would receive (every
  worker's whole model: n x the model's bytes, computed);
* outside s: the round's seconds outside the slowest worker's training
  (sending weights, the reduction tree, mixing, evaluating the master);
* mix s: the driver's mixing after the reduction.

This machine has 2 cores, so the workers' training is slow and shares them;
the bytes do not depend on it. The last line is the headline:
``driver bytes per round, 16 vs 2 workers: R`` (goal R <= 1.5).
"""

from __future__ import annotations

import argparse
import statistics

import sparana as sa
from sparana import cluster
from sparana.cluster._reduce import nbytes
from sparana.cluster._simulate import SimulatedCluster
from sparana.cluster._worker import model_payload

NODES, PER_NODE = 4, 4


def one_size(n, rounds, local_steps, data):
    workers = cluster.ray_workers(n, seed=0, data=data, experiment=f"scale-{n}", cpus_per_worker=0.5,
                                  gpus_per_worker=1, comp_type="CPU")
    try:
        model = sa.documentation_model(comp_type="CPU", seed=0)
        result = cluster.train_and_mix(model, workers, rounds, local_steps, progress=False, seed=0,
                                       settings={"batch_size": 64}, test=data.test.slice(0, 2000))
        nodes = len({p["node_id"] for p in workers.placement()})
    finally:
        workers.shutdown()
    later = result.rounds[1:] or result.rounds
    return {"workers": n, "nodes": nodes,
            "driver_bytes": statistics.median(r["driver_bytes"] for r in later),
            "driver_side_bytes": n * nbytes(model_payload(model)["layers"]),
            "outside": statistics.median(r["overhead_seconds"] for r in later),
            "mix": statistics.median(r["mix_seconds"] for r in later),
            "round": statistics.median(r["round_seconds"] for r in later)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-steps", type=int, default=2)
    args = parser.parse_args()
    if max(args.workers) > NODES * PER_NODE:
        parser.error(f"at most {NODES * PER_NODE} workers (the simulated cluster's GPUs)")
    nodes = SimulatedCluster(head_cpus=1)
    try:
        for _ in range(NODES):
            nodes.add_node(num_cpus=PER_NODE, num_gpus=PER_NODE)
        cluster.init(address=nodes.address)
        data = sa.load_mnist()
        rows = [one_size(n, args.rounds, args.local_steps, data) for n in args.workers]
    finally:
        cluster.shutdown()
        nodes.shutdown()
    print(f"\n{'workers':>7} {'nodes':>5} {'driver MB':>9} {'driver-side MB':>14} {'round s':>8} {'outside s':>9} "
          f"{'mix s':>6}")
    for r in rows:
        print(f"{r['workers']:>7} {r['nodes']:>5} {r['driver_bytes'] / 1e6:>9.1f} {r['driver_side_bytes'] / 1e6:>14.1f} "
              f"{r['round']:>8.2f} {r['outside']:>9.2f} {r['mix']:>6.3f}")
    by = {r["workers"]: r for r in rows}
    if 2 in by and 16 in by:
        print(f"driver bytes per round, 16 vs 2 workers: {by[16]['driver_bytes'] / by[2]['driver_bytes']:.2f}")


if __name__ == "__main__":
    main()
