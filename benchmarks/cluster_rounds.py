"""The orchestrator on an embedded Ray (this machine's CPUs): what a round costs outside training,
how samples per second scale from one worker to two, and that shards reach workers without a copy.

    python benchmarks/cluster_rounds.py [--rounds 4]

1. train_and_mix at the job's defaults (4 workers, 100 local steps of batch 128, the documentation's
   model): per round, the seconds outside the slowest worker's training (sending weights, mixing,
   evaluating the master on the 10,000 test images) as a share of the round. Target <= 10%.
2. One worker on one core against two workers on two cores, same local steps: samples per second
   of training. Target >= 1.6x.
3. Each worker's shard: the address of its image bytes lies in Ray's shared-memory object store
   mapping, read-only, in the worker process (no copy was made).
"""

from __future__ import annotations

import argparse
import statistics

import sparana as sa
from sparana import cluster


def overhead(rounds, local_steps):
    workers = cluster.ray_workers(4, seed=0, experiment="bench-overhead", cpus_per_worker=0.5)
    try:
        model = sa.documentation_model(comp_type="CPU", seed=0)
        result = cluster.train_and_mix(model, workers, rounds, local_steps, progress=False, seed=0)
        shards = workers.call("shard_info", [()] * len(workers))
    finally:
        workers.shutdown()
    return result.rounds, shards


def samples_per_second(n, local_steps):
    workers = cluster.ray_workers(n, seed=0, experiment=f"bench-scaling-{n}", cpus_per_worker=1)
    try:
        model = sa.documentation_model(comp_type="CPU", seed=0)
        result = cluster.train_and_mix(model, workers, 2, local_steps, progress=False, seed=0)
    finally:
        workers.shutdown()
    last = result.rounds[-1]  # the first round includes compiling the kernels in fresh workers
    return last["samples"] / last["train_seconds"]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--local-steps", type=int, default=100)
    args = parser.parse_args()
    info = cluster.init(num_cpus=2, local_mode=True)
    print(f"embedded Ray: {info.num_cpus} CPUs; dashboard {info.dashboard_url}")
    rounds, shards = overhead(args.rounds, args.local_steps)
    print(f"\n{'round':>5} {'round s':>8} {'train s':>8} {'outside s':>9} {'outside %':>9} {'accuracy':>9}")
    shares = []
    for r in rounds:
        share = 100 * r["overhead_seconds"] / r["round_seconds"]
        shares.append(share)
        print(f"{r['round']:>5} {r['round_seconds']:>8.2f} {r['train_seconds']:>8.2f} {r['overhead_seconds']:>9.2f} "
              f"{share:>8.1f}% {r['accuracy']:>9.4f}")
    steady = statistics.median(shares[1:]) if len(shares) > 1 else shares[0]
    one, two = samples_per_second(1, args.local_steps), samples_per_second(2, args.local_steps)
    print(f"\nsamples/s: one worker on one core {one:,.0f}, two workers on two cores {two:,.0f}")
    for s in shards:
        print(f"shard of {s['rows']} rows ({s['bytes']:,} bytes) in pid {s['pid']}: writeable={s['writeable']}, "
              f"mapped from {s['mapping']}")
    zero_copy = all(("plasma" in (s["mapping"] or "") or "/dev/shm" in (s["mapping"] or "")) and not s["writeable"]
                    for s in shards)
    print(f"round time outside training (median after the first round): {steady:.1f}% (target <= 10%); "
          f"two workers / one: {two / one:.2f}x (target >= 1.6); shards zero-copy: {zero_copy}")
    cluster.shutdown()


if __name__ == "__main__":
    main()
