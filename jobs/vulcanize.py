"""Split the documentation's MNIST model into submodels, train each apart, meld them back.

    python jobs/vulcanize.py                          # 1 epoch, then 2 submodels over the last 3 layers
    python jobs/vulcanize.py --submodels 4 --depth 2 --selection random --consolidation none

Trains the 784-1000-800-400-10 model for --epochs, splits its last --depth
layers into --submodels submodels over disjoint units (Vulcanizer.split_models),
trains each on its own (one after the other here; the Ray layer runs them in
parallel) with the consolidation weights reverted after every step, melds them
back and reports the test accuracy before the split, of each submodel (on the
main model's partial outputs) and after the meld, next to the full model
trained for as many more steps as one submodel (--no-baseline skips it). Also
the time per training step and the memory of a submodel against the full
model: parameters, Adam state, and the peak of traced allocations during its
first training step (tracemalloc sees NumPy's allocations).

Writes results/vulcanize/{vulcanize.json, vulcanize.png}.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc

import numpy as np

import sparana as sa
from sparana.compose import CONSOLIDATIONS, Vulcanizer


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=1, help="epochs of the full model before the split")
    parser.add_argument("--sub-epochs", type=float, default=1, help="epochs of each submodel")
    parser.add_argument("--submodels", type=int, default=2)
    parser.add_argument("--depth", type=int, default=3, help="last layers the submodels span (2 to 4)")
    parser.add_argument("--selection", default="max", choices=["max", "normal", "random"])
    parser.add_argument("--std", type=float, default=0.05, help="spread of the 'normal' selection")
    parser.add_argument("--consolidation", default="original", choices=list(CONSOLIDATIONS))
    parser.add_argument("--zeros-samples", type=int, default=10_000,
                        help="training samples for get_average_zeros (zero fractions, mean activations)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--evaluations", type=int, default=5, help="test evaluations while training each part")
    parser.add_argument("--timing-steps", type=int, default=20, help="steps timed for the full model and a submodel")
    parser.add_argument("--no-baseline", action="store_true", help="skip the full model's continued training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--comp-type", default=None, choices=["CPU", "GPU"], help="default: GPU if available")
    parser.add_argument("--results", default="results/vulcanize", help="folder for JSON and PNG results")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


class RevertingOptimizer:
    """An optimizer whose every step ends by putting the submodel's consolidation weights back."""

    def __init__(self, optimizer, vulcanizer, submodel):
        self.optimizer, self.vulcanizer, self.submodel = optimizer, vulcanizer, submodel

    @property
    def model(self):
        return self.optimizer.model

    @property
    def learning_rate(self):
        return self.optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        self.optimizer.learning_rate = value

    def train_step(self, inputs, labels):
        loss = self.optimizer.train_step(inputs, labels)
        self.vulcanizer.revert_weights(self.submodel)
        return loss


class SubmodelData:
    """A loader for a submodel: main-model batches mapped through the layers the submodel does not hold."""

    def __init__(self, loader, vulcanizer, submodel):
        self.loader, self.vulcanizer, self.submodel = loader, vulcanizer, submodel
        self._test = sa.to_host(vulcanizer.submodel_inputs(submodel, loader.test_data()))

    def minibatch(self, batch_size):
        x, y = self.loader.minibatch(batch_size)
        return sa.to_host(self.vulcanizer.submodel_inputs(self.submodel, x)), y

    def test_data(self):
        return self._test

    def test_labels(self):
        return self.loader.test_labels()


def memory(model, optimizer, batch):
    """Bytes of parameters, of optimizer state, and the traced peak of a first training step."""
    parameters = sum(int(layer.values.nbytes + layer.biases.nbytes) for layer in model.layers)
    tracemalloc.start()
    tracemalloc.reset_peak()
    optimizer.train_step(*batch)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    state = sum(int(array.nbytes) for array in optimizer.state_arrays().values())
    return {"parameter_bytes": parameters, "optimizer_state_bytes": state, "first_step_peak_traced_bytes": peak}


def step_seconds(optimizer, batches):
    """Median seconds of a training step over ``batches`` (after one warm-up step)."""
    optimizer.train_step(*batches[0])
    times = []
    for batch in batches:
        start = time.perf_counter()
        optimizer.train_step(*batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure(args, main, vulcanizer, submodel, loader):
    """Time and memory of a training step: the full model against ``submodel`` (both train on: run it last)."""
    batches = [loader.random_minibatch(args.batch_size) for _ in range(args.timing_steps)]
    start = time.perf_counter()
    sub_batches = [(sa.to_host(vulcanizer.submodel_inputs(submodel, x)), y) for x, y in batches]
    input_seconds = (time.perf_counter() - start) / len(batches)
    result = {"submodel_inputs_seconds_per_batch": input_seconds}
    for name, model, data in (("full", main, batches), ("submodel", submodel, sub_batches)):
        result[name] = memory(model, sa.AdamOptimizer(model, args.learning_rate), data[0])
        result[name]["step_seconds"] = step_seconds(sa.AdamOptimizer(model, args.learning_rate), data)
        result[name]["parameters"] = model.parameter_count()
    return result


def main(argv=None):
    args = parse(argv)
    data = sa.load_mnist()
    loader = sa.Loader.from_mnist(data, seed=args.seed)
    test_x, test_y = loader.test_data(), loader.test_labels()
    model = sa.documentation_model(comp_type=args.comp_type, seed=args.seed)
    steps = max(int(args.epochs * (loader.training_size // args.batch_size)), 1)
    sub_steps = max(int(args.sub_epochs * (loader.training_size // args.batch_size)), 1)
    progress = not args.no_progress
    print(f"{model} on {model.comp_type}: {steps} steps, then {args.submodels} submodels over the last "
          f"{args.depth} layers ({args.selection}, consolidation {args.consolidation}), {sub_steps} steps each",
          flush=True)
    sa.fit(sa.AdamOptimizer(model, args.learning_rate), loader, args.batch_size, steps=steps, progress=progress,
           description="full model")
    accuracy_before = model.get_accuracy(test_x, test_y)
    pre_split = sa.documentation_model(comp_type=model.comp_type, seed=args.seed)  # for the baseline
    pre_split.load_weights([(layer.weights.copy(), layer.biases.copy()) for layer in model.layers])

    vulcanizer = Vulcanizer(model, args.selection, std=args.std if args.selection == "normal" else None,
                            seed=args.seed)
    vulcanizer.get_average_zeros(loader.random_minibatch(args.zeros_samples)[0])
    start = time.perf_counter()
    submodels = vulcanizer.split_models(args.submodels, depth=args.depth, consolidation=args.consolidation)
    split_seconds = time.perf_counter() - start

    evaluate_every = max(sub_steps // args.evaluations, 1)
    reports, curves = [], {}
    for n, submodel in enumerate(submodels):
        sub_data = SubmodelData(sa.Loader.from_mnist(data, seed=[args.seed, n + 1]), vulcanizer, submodel)
        accuracy_start = submodel.get_accuracy(sub_data.test_data(), test_y)
        optimizer = RevertingOptimizer(sa.AdamOptimizer(submodel, args.learning_rate), vulcanizer, submodel)
        history = sa.fit(optimizer, sub_data, args.batch_size, steps=sub_steps, evaluate_every=evaluate_every,
                         progress=progress, description=f"submodel {n}", batch_fn=sub_data.minibatch)
        reports.append({"units": [int(c.size) for c in vulcanizer.chosen_units(submodel)],
                        "sizes": submodel.sizes, "parameters": submodel.parameter_count(),
                        "accuracy_at_split": accuracy_start, "accuracy_trained": history.accuracy[-1],
                        "train_seconds": history.seconds[-1], "history": history.as_dict()})
        curves[f"submodel {n}"] = ([0] + history.steps, [accuracy_start] + history.accuracy)

    start = time.perf_counter()
    vulcanizer.mind_meld(submodels)
    meld_seconds = time.perf_counter() - start
    accuracy_after = model.get_accuracy(test_x, test_y)

    baseline = None
    if not args.no_baseline:
        baseline_loader = sa.Loader.from_mnist(data, seed=[args.seed, 0])
        history = sa.fit(sa.AdamOptimizer(pre_split, args.learning_rate), baseline_loader, args.batch_size,
                         steps=sub_steps, evaluate_every=evaluate_every, progress=progress,
                         description="full model, continued")
        baseline = {"accuracy": history.accuracy[-1], "train_seconds": history.seconds[-1],
                    "history": history.as_dict()}
        curves["full model, continued"] = ([0] + history.steps, [accuracy_before] + history.accuracy)

    costs = measure(args, model, vulcanizer, submodels[0], loader)
    results = sa.Results(args.results)
    results.save_json("vulcanize.json", {
        "settings": vars(args), "steps": steps, "sub_steps": sub_steps, "accuracy_before_split": accuracy_before,
        "average_zeros": vulcanizer.average_zeros, "submodels": reports, "accuracy_after_meld": accuracy_after,
        "baseline_full_model_continued": baseline, "split_seconds": split_seconds, "meld_seconds": meld_seconds,
        "costs": costs})
    png = results.plot("vulcanize.png", {
        "test accuracy while training the parts": ("step", "accuracy", curves),
        "accuracy": ("stage (0 before split, 1 submodels trained, 2 after meld)", "accuracy", {
            f"submodel {n}": ([0, 1], [r["accuracy_at_split"], r["accuracy_trained"]])
            for n, r in enumerate(reports)} | {"main model": ([0, 2], [accuracy_before, accuracy_after])}),
    }, title=f"{args.submodels} submodels over the last {args.depth} layers of 784-1000-800-400-10")

    print(f"\naccuracy before the split: {accuracy_before:.4f}")
    for n, r in enumerate(reports):
        print(f"submodel {n} {r['sizes']}: {r['parameters']} parameters, accuracy at split "
              f"{r['accuracy_at_split']:.4f}, trained {r['accuracy_trained']:.4f}")
    print(f"accuracy after the meld: {accuracy_after:.4f}"
          + ("" if baseline is None else f"   (full model trained {sub_steps} more steps: {baseline['accuracy']:.4f})"))
    print(f"split {split_seconds * 1e3:.0f} ms, meld {meld_seconds * 1e3:.0f} ms")
    print(f"{'per training step':32s}{'full model':>12s}{'submodel 0':>14s}")
    for key, unit, scale in (("step_seconds", "ms", 1e3), ("parameter_bytes", "MB", 1e-6),
                             ("optimizer_state_bytes", "MB", 1e-6), ("first_step_peak_traced_bytes", "MB", 1e-6)):
        label = f"{key} ({unit})"
        print(f"{label:32s}{costs['full'][key] * scale:>12.2f}{costs['submodel'][key] * scale:>14.2f}")
    inputs_ms = costs["submodel_inputs_seconds_per_batch"] * 1e3
    print(f"submodel inputs (the driver's partial outputs): {inputs_ms:.2f} ms/batch")
    print(f"results: {results.path('vulcanize.json')}, {png}")
    return accuracy_after


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
