"""The distributed experiment: MNIST shards trained and mixed on Ray workers, pruned and converted
to sparse layers by the driver; then a fresh model trained by vulcanizing (every round, disjoint
submodels split off, trained apart on their workers and melded back).

    python jobs/distributed_mnist.py                    # an embedded Ray on this machine
    ray job submit --working-dir . -- python jobs/distributed_mnist.py   # a cluster (RAY_ADDRESS)

Each worker holds one shard (through Arrow, zero-copy) and its model or submodel, on its own GPU
when the cluster has GPUs (CPU in --local-mode). Writes results/distributed_mnist/{results.json,
rounds.png}, and TensorBoard scalars of every round as it ends (`tensorboard --logdir results/`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import ray

import sparana as sa
from sparana import cluster

LAYERS = [["relu", 1000], ["relu", 800], ["relu", 400], ["linear", 10]]  # the documentation's model


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=4, help="shards and workers (default 4)")
    parser.add_argument("--mix-rounds", type=int, default=4)
    parser.add_argument("--prune-levels", type=float, nargs="*", default=[0.5, 0.8, 0.9],
                        help="hidden-layer sparsity after each pruning round")
    parser.add_argument("--prune-extra-rounds", type=int, default=1,
                        help="rounds of mixing at the last sparsity after the pruning rounds")
    parser.add_argument("--vulcanize-rounds", type=int, default=10)
    parser.add_argument("--vulcanize-workers", type=int, default=2,
                        help="submodels per round (each holds 1/k of every hidden layer's units)")
    parser.add_argument("--local-steps", type=int, default=100, help="minibatches per worker per round")
    parser.add_argument("--mix", default="average", choices=["average", "importance"])
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--convert-at", type=float, default=0.9, help="sparsity from which layers are CSR")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--local-mode", action="store_true", help="every worker on the CPU with NumPy")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or embedded)")
    parser.add_argument("--cpus-per-worker", type=float, default=None,
                        help="default: the cluster's CPUs shared evenly (at most 1 each)")
    parser.add_argument("--results", default="results/distributed_mnist",
                        help="JSON, PNG, the per-round checkpoints (checkpoints/) and TensorBoard scalars "
                             "(tensorboard/) go here")
    parser.add_argument("--resume", action="store_true",
                        help="continue each stage after the last round of its checkpoint in the results folder")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    info = cluster.init(address=args.address, local_mode=args.local_mode)
    print(f"Ray at {info.address}: {info.num_cpus} CPUs, {info.num_gpus} GPUs; dashboard {info.dashboard_url}",
          flush=True)
    data = sa.load_mnist()
    checkpoints = Path(args.results) / "checkpoints"

    def stage(title, pool, model=None, **keys):
        """One stage: the experiment of a config (as a config file would hold it) on these workers.
        Each stage checkpoints every round; --resume continues it from its checkpoint."""
        config = cluster.experiment_config(dict(
            name=title.replace(" ", "_"), model={"layers": LAYERS}, local_steps=args.local_steps, seed=args.seed,
            train={"learning_rate": args.learning_rate, "batch_size": args.batch_size}, **keys), source=__file__)
        path = checkpoints / f"{config['name']}.safetensors"
        titles.append(title)
        return cluster.run_experiment(config, data, checkpoint=path, resume=args.resume, model=model, workers=pool,
                                      on_round=None if args.no_progress else progress(title),
                                      log_dir=Path(args.results) / "tensorboard")

    stages, titles, memory = [], [], []
    workers = start_workers(args.workers, "trainer", info, args)
    model = sa.documentation_model(comp_type="CPU", seed=args.seed)
    stages.append(stage("train and mix", workers, model, experiment="train_and_mix", rounds=args.mix_rounds,
                        mix=args.mix))
    if args.prune_levels:
        prune = {"targets": dict(enumerate(args.prune_levels)), "convert_at": args.convert_at}
        stages.append(stage("prune and mix", workers, model, experiment="train_and_mix", mix=args.mix, prune=prune,
                            rounds=len(args.prune_levels) + args.prune_extra_rounds))
    memory += workers.call("memory", [()] * len(workers))
    workers.shutdown()
    if args.vulcanize_rounds:
        # Vulcanizing trains a model from its start (splitting a trained model into 1/k-sized
        # submodels costs it accuracy that a few rounds do not win back).
        workers = start_workers(args.vulcanize_workers, "submodel", info, args)
        stages.append(stage("vulcanize", workers, experiment="vulcanize", rounds=args.vulcanize_rounds,
                            workers=args.vulcanize_workers))
        memory += workers.call("memory", [()] * len(workers))
        workers.shutdown()
    report(stages, titles, memory, args)
    return stages


def progress(title):
    def show(figures, result):
        print(f"{title}: round {figures['round']}, test accuracy {figures['accuracy']:.4f}", flush=True)
    return show


def start_workers(n, role, info, args):
    cpus = args.cpus_per_worker or min(1.0, info.num_cpus / n)
    start = time.perf_counter()
    workers = cluster.ray_workers(n, seed=args.seed, experiment="distributed_mnist", role=role, cpus_per_worker=cpus)
    print(f"{n} workers ready in {time.perf_counter() - start:.1f} s on {workers.comp_type}:", flush=True)
    for place in workers.placement():
        print(f"  {place['name']}: node {place['node_id'][:12]}, GPUs {place['gpu_ids'] or '-'}, pid {place['pid']}",
              flush=True)
    return workers


def report(stages, titles, memory, args):
    print()
    print(f"{'stage':<15} {'round':>5} {'accuracy':>9} {'loss':>8} {'sparsity':>9} {'round s':>8} {'train s':>8} "
          f"{'outside %':>9}")
    panels = {}  # one panel per model: its stages' rounds one after the other
    for stage, title in zip(stages, titles):
        for r in stage.rounds:
            outside = 100 * r["overhead_seconds"] / r["round_seconds"]
            sparsity = f"{r['sparsity']:.0%}" if "sparsity" in r else ""
            print(f"{title:<15} {r['round']:>5} {r['accuracy']:>9.4f} {r['loss']:>8.4f} {sparsity:>9} "
                  f"{r['round_seconds']:>8.2f} {r['train_seconds']:>8.2f} {outside:>8.1f}%")
        series = panels.setdefault(id(stage.model), {})
        done = sum(len(xs) for xs, _ in series.values())
        series[title] = (list(range(done + 1, done + len(stage.rounds) + 1)), [r["accuracy"] for r in stage.rounds])
    print()
    for stage, title in zip(stages, titles):
        resumed = f" (resumed after round {stage.resumed_from - 1})" if stage.resumed_from else ""
        print(f"{title}: test accuracy {stage.accuracy:.4f} after {len(stage.rounds)} rounds{resumed}")
    for model in {id(stage.model): stage.model for stage in stages}.values():
        print(f"{model}: {model.parameter_count():,} parameters stored")
    print(f"final test accuracy {stages[-1].accuracy:.4f}; worker peak RSS "
          f"{max(m['peak_rss'] for m in memory) / 1e6:.0f} MB")
    results = sa.Results(args.results)
    results.save_json("results.json", {"settings": vars(args), "worker_memory": memory,
                                       "stages": [dict(s.as_dict(), name=t) for s, t in zip(stages, titles)]})
    png = results.plot("rounds.png", {
        " then ".join(series) + " (test accuracy)": ("round", "accuracy", series) for series in panels.values()},
        title="Sparana on Ray workers, MNIST shards")
    print(f"results: {results.path('results.json')}, {png}")


if __name__ == "__main__":
    try:
        main()
    finally:
        if ray.is_initialized():
            cluster.shutdown()
    sys.exit(0)
