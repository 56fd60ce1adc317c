"""The sparana command: experiments from config files, sweeps on Ray Tune, and their reports.

    sparana run CONFIG.yaml [--resume]      one experiment
    sparana sweep CONFIG.yaml [--resume]    the config's sweep: section, on Ray Tune
    sparana report RESULTS_DIR              the table and plots of a finished run or sweep

``run`` and ``sweep`` find the cluster as the jobs do: ``--address``, else ``RAY_ADDRESS`` (set by
``ray job submit``), else an embedded Ray on this machine. A config that cannot run is refused
before anything starts, and the command exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

EXIT_USAGE = 2


def parser():
    main = argparse.ArgumentParser(prog="sparana", description=__doc__.replace("``", "`").rstrip(),
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="`sparana COMMAND --help` tells more about each command.")
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run one experiment of a config file",
                              description="Run the experiment of a config file (its sweep: section, if any, is "
                                          "not used). Writes results/<name>/: run.json, the round checkpoint, "
                                          "summary.csv and the PNG plots.")
    run.add_argument("config", metavar="CONFIG.yaml", help="the experiment's config file")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="give a grid key (${KEY}) or a config key (dotted: train.learning_rate) a value "
                          "(YAML), e.g. --set sparsity=0.9; repeatable")
    run.add_argument("--resume", action="store_true", help="continue after the last round of the run's checkpoint")
    sweep = commands.add_parser("sweep", help="run the sweep: section of a config file on Ray Tune",
                                description="Run every grid point and seed of the config's sweep: section as a "
                                            "Ray Tune trial. Writes Tune's results, each trial's checkpoints and "
                                            "the report (summary.csv, PNG plots) under results/<name>/.")
    sweep.add_argument("config", metavar="CONFIG.yaml", help="the config file, with a sweep: section")
    sweep.add_argument("--resume", action="store_true",
                       help="continue a stopped sweep: finished trials are kept, the others continue from their "
                            "last round")
    for command in (run, sweep):
        command.add_argument("--results", default="results", metavar="DIR",
                             help="results go to DIR/<name>/ (default: results)")
        command.add_argument("--address", default=None,
                             help="Ray cluster address (default: RAY_ADDRESS, else an embedded Ray)")
        command.add_argument("--local-mode", action="store_true", help="every worker on the CPU with NumPy")
    report = commands.add_parser("report", help="print the table and write the plots of a run or sweep",
                                 description="Print the summary table of a finished run or sweep and write "
                                             "summary.csv and the PNG plots into its folder.")
    report.add_argument("results", metavar="RESULTS_DIR", help="a run's or sweep's folder, e.g. results/prune-sweep")
    return main


def main(argv=None):
    args = parser().parse_args(argv)
    from . import CheckpointError, cluster
    from .cluster import ClusterError, ConfigError, ReportError, SweepError, SweepUnfinished
    from .data import DatasetError, FetchError

    try:
        if args.command == "report":
            cluster.write_report(args.results, stream=sys.stdout)
            return 0
        return _run(args) if args.command == "run" else _sweep(args)
    except (ConfigError, DatasetError, ReportError, SweepError, CheckpointError) as exc:
        print(f"sparana {args.command}: error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, SweepUnfinished) else EXIT_USAGE
    except (ClusterError, FetchError) as exc:  # the cluster or the data's mirrors: not the command's fault
        print(f"sparana {args.command}: error: {exc}", file=sys.stderr)
        return 1


def _overrides(pairs):
    from .cluster import ConfigError

    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair}: expected KEY=VALUE, such as sparsity=0.9")
        values[key] = yaml.safe_load(value)
    return values


def _connect(args):
    from . import cluster

    info = cluster.init(address=args.address, local_mode=args.local_mode)
    print(f"Ray at {info.address}: {info.num_cpus} CPUs, {info.num_gpus} GPUs; dashboard {info.dashboard_url}",
          flush=True)
    return info


def _run(args):
    from . import cluster
    from .cluster._report import RUN_FILE
    from .cluster._runner import summary

    config = cluster.load_config(args.config, _overrides(args.set))
    experiment = config.experiment()
    data = cluster.load_data(experiment, config.source)  # before Ray starts: a bad data set fails fast
    folder = Path(args.results) / config.name
    folder.mkdir(parents=True, exist_ok=True)
    info = _connect(args)
    resources = dict(experiment["resources"] or (config.sweep or {}).get("resources") or {})
    cpus = resources.get("cpus_per_worker") or min(1.0, info.num_cpus / experiment["workers"])
    print(f"{experiment['name']}: {experiment['experiment']} with {experiment['workers']} worker(s), "
          f"{experiment['rounds']} rounds of {experiment['local_steps']} steps", flush=True)

    def progress(figures, result):
        sparsity = f", sparsity {figures['sparsity']:.1%}" if "sparsity" in figures else ""
        print(f"round {figures['round']}: test accuracy {figures['accuracy']:.4f}, loss {figures['loss']:.4f}"
              f"{sparsity}, {figures['round_seconds']:.1f} s", flush=True)

    try:
        result = cluster.run_experiment(experiment, data, checkpoint=folder / "rounds.safetensors",
                                        resume=args.resume, on_round=progress, cpus_per_worker=cpus,
                                        gpus_per_worker=resources.get("gpus_per_worker"))
    finally:
        cluster.shutdown()
    if result.resumed_from:
        print(f"resumed after round {result.resumed_from - 1}")
    record = {"name": config.name, "seed": experiment["seed"], "config": experiment, "summary": summary(result),
              "rounds": result.rounds}
    (folder / RUN_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
    cluster.write_report(folder, stream=sys.stdout)
    return 0


def _sweep(args):
    from . import cluster

    config = cluster.load_config(args.config)
    if not config.sweep:
        raise cluster.ConfigError(f"{config.source}: sweep: missing: expected a sweep: section with grid: and seeds: "
                          f"(`sparana run` runs one experiment)")
    _connect(args)
    try:
        cluster.run_sweep(config, args.results, resume=args.resume, local_mode=args.local_mode, stream=sys.stdout)
    finally:
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
