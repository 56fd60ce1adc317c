"""Prune and convert (the original documentation's example): train, prune iteratively with
retraining, convert to truly sparse layers, retrain on the fixed pattern.

    python jobs/prune_and_convert.py       # levels 50 70 80 85 90 93 95 97 98 % of the hidden weights

For each level the hidden layers are pruned to that sparsity by |W| (or MAAV), the model is
retrained (masked dense below --convert-at, sparse CSR from it on), and the job prints a table of
sparsity, test accuracy before and after retraining, stored bytes and inference time on a batch of
1,000 (sparse against the same weights held dense). Writes results/prune_and_convert/{results.json,
accuracy.png}.
"""

from __future__ import annotations

import argparse
import sys
import time

import sparana as sa
from sparana.nn import DENSE_LAYERS


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", type=float, nargs="+", default=[0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98],
                        help="target sparsities of the hidden layers, in order")
    parser.add_argument("--epochs", type=float, default=3, help="training epochs before pruning")
    parser.add_argument("--retrain-epochs", type=float, default=2, help="retraining epochs per dense level")
    parser.add_argument("--sparse-retrain-epochs", type=float, default=3,
                        help="retraining epochs per level once the layers are CSR (cheaper)")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--retrain-learning-rate", type=float, default=5e-4)
    parser.add_argument("--criterion", default="MAAV", choices=["absolute", "MAAV"],
                        help="MAAV (default) also removes weights of inputs that are always zero")
    parser.add_argument("--convert-at", type=float, default=0.9, help="sparsity from which layers are CSR")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--comp-type", default=None, choices=["CPU", "GPU"])
    parser.add_argument("--results", default="results/prune_and_convert")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def stored_bytes(model):
    """Bytes of the parameters as stored: dense arrays, or CSR values + column indices + row pointers."""
    total = 0
    for layer in model.layers:
        total += layer.biases.nbytes
        if layer.is_sparse:
            csr = layer.weights
            total += csr.data.nbytes + csr.indices.nbytes + csr.indptr.nbytes
        else:
            total += layer.weights.nbytes
    return total


def inference_ms(model, x, repeats=20):
    """Best time of ``model.outputs`` on ``x`` over ``repeats`` runs, in milliseconds."""
    model.outputs(x)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model.outputs(x)
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main(argv=None):
    args = parse(argv)
    data = sa.load_mnist()
    loader = sa.Loader.from_mnist(data, seed=args.seed)
    test_x, test_y = loader.test_data(), loader.test_labels()
    batch_1000 = test_x[:1000]
    model = sa.documentation_model(comp_type=args.comp_type, seed=args.seed)
    hidden = model.depth - 1
    steps_per_epoch = loader.training_size // args.batch_size
    progress = not args.no_progress

    def train(epochs, rate, label):
        optimizer = sa.AdamOptimizer(model, rate)
        return sa.fit(optimizer, loader, args.batch_size, steps=int(epochs * steps_per_epoch), progress=progress,
                      description=label, schedule="cosine")

    history = train(args.epochs, args.learning_rate, "dense training")
    baseline = history.accuracy[-1]
    dense_ms = inference_ms(model, batch_1000)
    rows = [{"sparsity": 0.0, "layers": "dense", "accuracy_pruned": baseline, "accuracy": baseline,
             "bytes": stored_bytes(model), "inference_ms": dense_ms, "dense_inference_ms": dense_ms,
             "retrain_seconds": 0.0}]
    print(f"dense model: test accuracy {baseline:.4f}", flush=True)
    lobo = sa.Lobotomizer(model, seed=args.seed)
    for level in args.levels:
        if args.criterion == "MAAV":
            lobo.get_MAAV(loader.random_minibatch(2000)[0])
        else:
            lobo.get_absolute_values()
        lobo.prune_smallest(layers=[level] * hidden + [None])
        if level >= args.convert_at and not model.layers[0].is_sparse:
            model.convert_to_sparse(list(range(hidden)))
        pruned_accuracy = model.get_accuracy(test_x, test_y)
        epochs = args.sparse_retrain_epochs if model.layers[0].is_sparse else args.retrain_epochs
        retrained = train(epochs, args.retrain_learning_rate, f"retraining at {level:.0%}")
        sparse_ms = inference_ms(model, batch_1000)
        as_dense = _dense_copy(model)
        row = {"sparsity": level, "layers": "CSR" if model.layers[0].is_sparse else "dense + mask",
               "accuracy_pruned": pruned_accuracy, "accuracy": retrained.accuracy[-1],
               "bytes": stored_bytes(model), "inference_ms": sparse_ms,
               "dense_inference_ms": inference_ms(as_dense, batch_1000),
               "retrain_seconds": retrained.seconds[-1]}
        rows.append(row)
        print(f"{level:.0%}: accuracy {pruned_accuracy:.4f} after pruning, {row['accuracy']:.4f} after retraining",
              flush=True)
    report(rows, baseline, args)
    return rows


def _dense_copy(model):
    """The same weights held in dense layers (for the inference comparison)."""
    copy = sa.Model(model.input_size, [DENSE_LAYERS[layer.activation](size=layer.size) for layer in model.layers],
                    comp_type=model.comp_type, seed=0)
    copy.load_weights([(layer.dense_weights(), layer.biases) for layer in model.layers])
    return copy


def report(rows, baseline, args):
    print()
    header = f"{'sparsity':>8}  {'layers':<12} {'acc pruned':>10} {'acc retrained':>13} {'vs dense':>9} " \
             f"{'bytes':>10} {'infer ms':>9} {'dense ms':>9} {'speed-up':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['sparsity']:>8.0%}  {r['layers']:<12} {r['accuracy_pruned']:>10.4f} {r['accuracy']:>13.4f} "
              f"{(r['accuracy'] - baseline) * 100:>+8.2f}p {r['bytes']:>10,} {r['inference_ms']:>9.2f} "
              f"{r['dense_inference_ms']:>9.2f} {r['dense_inference_ms'] / r['inference_ms']:>7.1f}x")
    results = sa.Results(args.results)
    results.save_json("results.json", {"settings": vars(args), "baseline_accuracy": baseline, "levels": rows})
    levels = [r["sparsity"] * 100 for r in rows]
    png = results.plot("accuracy.png", {
        "test accuracy": ("hidden-layer sparsity (%)", "accuracy", {
            "after pruning": (levels, [r["accuracy_pruned"] for r in rows]),
            "after retraining": (levels, [r["accuracy"] for r in rows])}),
        "stored parameters": ("hidden-layer sparsity (%)", "MB", {
            "bytes": (levels, [r["bytes"] / 1e6 for r in rows])}),
    }, title="Prune and convert: 784-1000-800-400-10 on MNIST")
    print(f"\nresults: {results.path('results.json')}, {png}")


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
