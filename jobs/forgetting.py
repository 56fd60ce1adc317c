"""Forgetting and not forgetting: teach a network two held-out MNIST digits, two ways.

    python jobs/forgetting.py                  # digits 8 and 9 held out, a few minutes on 2 CPU cores
    python jobs/forgetting.py --holdout 3 5 --selected-ratio 0.5

1. Train the documentation's 784-1000-800-400-10 network on the eight other
   digits (10 outputs from the start: 8 used, 2 reserved for the new digits).
2. Teach it the held-out digits:
   (a) plain fine-tuning: every weight and bias, on batches of the new digits only;
   (b) selected training: only the weights with the lowest MAAV on old-digit data
       (the old task's least important weights, ``--selected-ratio`` of each
       layer) plus every weight into the two new outputs (``add_output_class``),
       biases frozen, with SelectedAdamOptimizer, on batches mixing new digits
       (``--new-fraction``) and old digits (rehearsal, ``SplitLoader.mixed_minibatch``).
   Two controls say which ingredient does what: (a) with the same rehearsal, and
   (b) on new digits only. Without rehearsal no set of weights keeps the old
   digits: nothing tells the two new outputs to stay low on old digits.
3. Un-forgetting: the old task's most important weights (top MAAV, several
   fractions) and the biases were stored with ModelSaver.store_sparse_parameters
   before (a); writing them back after (a) brings the old digits back. For (b),
   the selected weights' old values are enough to return to the old model
   exactly, and the new values to switch back.

Every way uses Adam with the same learning rate, cosine schedule, batch size and
number of steps. Writes results/forgetting/{forgetting.json, forgetting.png}.
"""

from __future__ import annotations

import argparse
import sys
import time

import matplotlib
import numpy as np

import sparana as sa

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

RESTORE_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--holdout", type=int, nargs=2, default=[8, 9], metavar="DIGIT",
                        help="the two digits held out of the old task (default 8 9)")
    parser.add_argument("--old-steps", type=int, default=1000, help="steps on the old task (default 1000)")
    parser.add_argument("--new-steps", type=int, default=600, help="steps of each way of teaching the new digits")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's rate, cosine-decayed")
    parser.add_argument("--selected-ratio", type=float, default=0.5,
                        help="fraction of each layer's weights (lowest MAAV) that selected training trains")
    parser.add_argument("--new-fraction", type=float, default=0.2,
                        help="fraction of each rehearsal batch taken from the new digits (the rest: old digits)")
    parser.add_argument("--statistics-samples", type=int, default=2000,
                        help="old-digit training samples for the MAAV statistics")
    parser.add_argument("--no-controls", action="store_true", help="skip the two control runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--comp-type", default=None, choices=["CPU", "GPU"], help="default: GPU if available")
    parser.add_argument("--results", default="results/forgetting", help="folder for JSON and PNG results")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.holdout[0] == args.holdout[1] or not all(0 <= d <= 9 for d in args.holdout):
        parser.error(f"--holdout needs two different digits in 0..9, got {args.holdout}")
    for name in ("selected_ratio", "new_fraction"):
        if not 0 < getattr(args, name) <= 1:
            parser.error(f"--{name.replace('_', '-')} must be in (0, 1], got {getattr(args, name)}")
    return args


class Experiment:
    """The model, the split data and the evaluation sets shared by every way."""

    def __init__(self, args):
        self.args = args
        self.loader = sa.SplitLoader.from_mnist(sa.load_mnist(), remove_classes=list(args.holdout),
                                                add_classes=2, seed=args.seed)
        width = self.loader.label_width
        self.new_columns = [width - 2, width - 1]  # the held-out digits' outputs (8 and 9 for 8, 9)
        self.old_set = (self.loader.test_data(), self.loader.test_labels())
        self.new_set = self.loader.removed_test_set(list(args.holdout), self.new_columns)
        self.all_set = tuple(np.concatenate(pair) for pair in zip(self.old_set, self.new_set))
        self.model = sa.documentation_model(comp_type=args.comp_type, seed=args.seed)

    def accuracies(self):
        return {name: self.model.get_accuracy(*data)
                for name, data in (("old", self.old_set), ("new", self.new_set), ("all", self.all_set))}

    def new_batch(self, size):
        return self.loader.removed_minibatch(size, list(self.args.holdout), self.new_columns)

    def mixed_batch(self, size):
        return self.loader.mixed_minibatch(size, list(self.args.holdout), self.args.new_fraction,
                                           self.new_columns)

    def train(self, optimizer, batch_fn, steps, description):
        """``steps`` of ``optimizer`` with a cosine schedule; fit's History (its accuracy: the old digits')."""
        history = sa.fit(optimizer, self.loader, self.args.batch_size, steps=steps, batch_fn=batch_fn,
                         evaluate_every=max(steps // 12, 1), schedule="cosine",
                         progress=not self.args.no_progress, description=description)
        return history


def host_values(model):
    return [np.array(sa.to_host(layer.values)) for layer in model.layers]


def teach(exp, name, description, optimizer, batch_fn, before):
    """Train one way of teaching the new digits; its row of the table."""
    start = time.perf_counter()
    history = exp.train(optimizer, batch_fn, exp.args.new_steps, name)
    row = {"way": name, "method": description, "before": before, "after": exp.accuracies(),
           "seconds": time.perf_counter() - start,
           "old_accuracy_during_training": {"steps": [0] + history.steps,
                                            "accuracy": [before["old"]] + history.accuracy}}
    print(f"{name}: old {row['after']['old']:.4f}  new {row['after']['new']:.4f}  all {row['after']['all']:.4f}",
          flush=True)
    return row


def main(argv=None):
    args = parse(argv)
    wall = time.perf_counter()
    exp = Experiment(args)
    model, loader = exp.model, exp.loader
    digits = ", ".join(map(str, args.holdout))
    print(f"{model} on {model.comp_type}; old task: the digits other than {digits}", flush=True)

    # 1. The old task.
    exp.train(sa.AdamOptimizer(model, args.learning_rate), loader.minibatch, args.old_steps, "old digits")
    before = exp.accuracies()
    old_values = host_values(model)
    old_model = sa.ModelSaver(model)
    selector = sa.ParameterSelector(model, seed=args.seed)
    selector.get_MAAV(loader.random_minibatch(args.statistics_samples)[0])  # importance for the old task
    print(f"old task: old digits {before['old']:.4f}, new digits {before['new']:.4f}", flush=True)

    # Store the old task's most important weights (top MAAV) and the biases, for un-forgetting.
    important = {}
    for ratio in RESTORE_RATIOS:
        selector.get_top(ratio)
        important[ratio] = sa.ModelSaver(model)
        important[ratio].store_sparse_parameters()
    selector.clear_masks()

    rows = []
    new_only = f"batches of new digits ({digits}) only"
    rehearsal = (f"batches of {args.new_fraction:.0%} new digits ({digits}) and {1 - args.new_fraction:.0%} "
                 f"old digits (rehearsal)")
    ways = [("(a) fine-tuning", True, False), ("(b) selected", False, True)]
    if not args.no_controls:
        ways += [("(a) fine-tuning + rehearsal [control]", True, True),
                 ("(b) selected, no rehearsal [control]", False, False)]
    unforgetting = {}
    for name, whole, rehearse in ways:
        old_model.restore_model()
        selector.clear_masks()
        batch_fn = exp.mixed_batch if rehearse else exp.new_batch
        data = rehearsal if rehearse else new_only
        if whole:
            optimizer = sa.AdamOptimizer(model, args.learning_rate)
            description = f"every weight and bias; {data}"
        else:
            r = args.selected_ratio
            selector.get_bottom(layers=[r] * model.depth)
            selector.add_output_class(exp.new_columns)
            optimizer = sa.SelectedAdamOptimizer(model, args.learning_rate, train_biases=False)
            trained = sum(int(sa.to_host(layer.training_mask).sum()) for layer in model.layers)
            total = sum(layer.values.size for layer in model.layers)
            description = (f"{r:.0%} lowest-MAAV weights of each layer plus every weight into outputs "
                           f"{exp.new_columns} ({trained / total:.1%} of the weights), biases frozen; {data}")
            old_selected = sa.ModelSaver(model)
            old_selected.store_sparse_parameters()
        row = teach(exp, name, description, optimizer, batch_fn, before)
        if not whole:
            masks = [sa.to_host(layer.training_mask) for layer in model.layers]
            row["unselected_weights_unchanged"] = all(
                np.array_equal(new[~mask], old[~mask]) for new, old, mask in zip(host_values(model), old_values, masks))
        rows.append(row)
        if name == "(a) fine-tuning":
            unforgetting["(a)"] = restore_important(exp, important)
        if name == "(b) selected":
            unforgetting["(b)"] = switch_tasks(exp, old_selected, old_values)

    results = sa.Results(args.results)
    summary = {"settings": vars(args), "seeds": {"model": args.seed, "loader": args.seed, "selector": args.seed},
               "old_task": before, "ways": rows, "unforgetting": unforgetting,
               "wall_seconds": time.perf_counter() - wall}
    results.save_json("forgetting.json", summary)
    png = plot(results, "forgetting.png", rows, unforgetting, before, digits)
    print()
    print(table(rows))
    print()
    report_unforgetting(unforgetting)
    report_targets(rows)
    print(f"results: {results.path('forgetting.json')}, {png}  ({summary['wall_seconds']:.0f} s)")
    return summary


def restore_important(exp, important):
    """After (a): write back the old task's top weights (several fractions) and biases; accuracies."""
    tuned = sa.ModelSaver(exp.model)
    curve = {"ratios": [0.0], "old": [], "new": [], "all": []}
    base = exp.accuracies()
    for key in ("old", "new", "all"):
        curve[key].append(base[key])
    for ratio, saver in important.items():
        tuned.restore_model()
        saver.restore_sparse_parameters()
        accuracy = exp.accuracies()
        curve["ratios"].append(ratio)
        for key in ("old", "new", "all"):
            curve[key].append(accuracy[key])
    tuned.restore_model()
    return curve


def switch_tasks(exp, old_selected, old_values):
    """After (b): the selected weights' old values give back the old model exactly; the new ones return."""
    new_selected = sa.ModelSaver(exp.model)
    count = new_selected.store_sparse_parameters()
    after = exp.accuracies()
    old_selected.restore_sparse_parameters()
    restored = exp.accuracies()
    identical = all(np.array_equal(a, b) for a, b in zip(host_values(exp.model), old_values))
    new_selected.restore_sparse_parameters()
    return {"stored_weights": count, "old_restored": restored, "identical_to_old_model": identical,
            "new_restored": exp.accuracies(), "after_training": after}


def table(rows):
    header = f"{'way':40s} {'old before':>10s} {'old after':>10s} {'new before':>10s} {'new after':>10s} " \
             f"{'all before':>10s} {'all after':>10s}"
    lines = [header, "-" * len(header)]
    for row in rows:
        b, a = row["before"], row["after"]
        lines.append(f"{row['way']:40s} {b['old']:10.4f} {a['old']:10.4f} {b['new']:10.4f} {a['new']:10.4f} "
                     f"{b['all']:10.4f} {a['all']:10.4f}")
    lines.append("")
    lines += [f"{row['way']}: {row['method']}" for row in rows]
    return "\n".join(lines)


def report_unforgetting(unforgetting):
    if "(a)" in unforgetting:
        curve = unforgetting["(a)"]
        pairs = ", ".join(f"{r:.0%}: old {o:.4f} new {n:.4f}"
                          for r, o, n in zip(curve["ratios"], curve["old"], curve["new"]))
        print(f"un-forgetting after (a), old task's top-MAAV weights and biases written back -- {pairs}")
    if "(b)" in unforgetting:
        b = unforgetting["(b)"]
        print(f"after (b): writing back the {b['stored_weights']} selected weights' old values (and biases) gives "
              f"old {b['old_restored']['old']:.4f} new {b['old_restored']['new']:.4f}, identical to the old model: "
              f"{b['identical_to_old_model']}; the new values give back old {b['new_restored']['old']:.4f} "
              f"new {b['new_restored']['new']:.4f}")


def report_targets(rows):
    by_name = {row["way"]: row for row in rows}
    fine, selected = by_name["(a) fine-tuning"], by_name["(b) selected"]
    drop = 100 * (fine["before"]["old"] - fine["after"]["old"])
    change = 100 * (selected["after"]["old"] - selected["before"]["old"])
    print(f"(a) fine-tuning: the old digits drop by {drop:.1f} points")
    print(f"(b) selected: the old digits change by {change:+.2f} points (target: within 1), the new digits reach "
          f"{selected['after']['new']:.4f} (target: at least 0.95); unselected weights unchanged bit for bit: "
          f"{selected['unselected_weights_unchanged']}")


def plot(results, name, rows, unforgetting, before, digits):
    panels = 2 if "(a)" in unforgetting else 1
    fig, axes = plt.subplots(1, panels + 1, figsize=(6.5 * (panels + 1), 4.8), squeeze=False)
    ax = axes[0][0]
    keys = ("old", "new", "all")
    width = 0.8 / (len(rows) + 1)
    x = np.arange(len(keys))
    ax.bar(x, [before[k] for k in keys], width, label="before (old task only)", color="0.6")
    for j, row in enumerate(rows, start=1):
        ax.bar(x + j * width, [row["after"][k] for k in keys], width, label=row["way"])
    ax.set_xticks(x + width * len(rows) / 2, ["old digits", f"new digits ({digits})", "all ten"])
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.35)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_title("accuracy before and after teaching the new digits")
    ax.legend(fontsize=7, loc="upper center", ncol=2)
    ax = axes[0][1]
    for row in rows:
        trace = row["old_accuracy_during_training"]
        ax.plot(trace["steps"], trace["accuracy"], marker="o", markersize=3, label=row["way"])
    ax.set_xlabel("step of teaching the new digits")
    ax.set_ylabel("old digits' test accuracy")
    ax.set_title("forgetting during training")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    if panels == 2:
        ax = axes[0][2]
        curve = unforgetting["(a)"]
        ax.plot(curve["ratios"], curve["old"], marker="o", label="old digits")
        ax.plot(curve["ratios"], curve["new"], marker="o", label="new digits")
        ax.set_xlabel("fraction of the old task's top-MAAV weights written back (with the biases)")
        ax.set_ylabel("test accuracy")
        ax.set_title("un-forgetting after (a)")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = results.save_figure(name, fig)
    plt.close(fig)
    return path


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
