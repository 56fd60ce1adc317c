"""Train the original documentation's MNIST model and report its test accuracy.

    python jobs/train_mnist.py                 # Adam 1e-3 (cosine decay), cross-entropy, batch 128, 3 epochs
    python jobs/train_mnist.py --original      # the original demo: Adam 1e-4, epsilon 1e-3, batch 250,
                                               # 20,000 steps, quadratic loss, gradient clipping at 1

Writes results/train_mnist/{history.json, training.png}.
"""

from __future__ import annotations

import argparse
import sys
import time

import sparana as sa

ORIGINAL = dict(learning_rate=1e-4, epsilon=1e-3, batch_size=250, steps=20_000, loss="quadratic", clip=1.0,
                schedule="constant")


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=3, help="epochs to train (default 3)")
    parser.add_argument("--steps", type=int, default=None, help="minibatches to train (overrides --epochs)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--epsilon", type=float, default=1e-8, help="Adam's epsilon")
    parser.add_argument("--loss", default="cross_entropy", choices=["cross_entropy", "quadratic"])
    parser.add_argument("--schedule", default="cosine", choices=["constant", "cosine", "linear"],
                        help="learning-rate schedule (default cosine decay to 0)")
    parser.add_argument("--clip", type=float, default=None, help="element-wise gradient clipping")
    parser.add_argument("--original", action="store_true", help="the original demo's settings (see above)")
    parser.add_argument("--evaluations", type=int, default=10, help="test evaluations during training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--comp-type", default=None, choices=["CPU", "GPU"], help="default: GPU if available")
    parser.add_argument("--results", default="results/train_mnist", help="folder for JSON and PNG results")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.original:
        for key, value in ORIGINAL.items():
            setattr(args, key, value)
    return args


def main(argv=None):
    args = parse(argv)
    data = sa.load_mnist()
    loader = sa.Loader.from_mnist(data, seed=args.seed)
    model = sa.documentation_model(comp_type=args.comp_type, seed=args.seed)
    optimizer = sa.AdamOptimizer(model, args.learning_rate, epsilon=args.epsilon, loss=args.loss, clip=args.clip)
    steps = args.steps or int(args.epochs * (loader.training_size // args.batch_size))
    print(f"{model} on {model.comp_type}; {steps} steps of batch {args.batch_size}, "
          f"Adam lr {args.learning_rate}, {args.loss} loss", flush=True)
    start = time.perf_counter()
    history = sa.fit(optimizer, loader, args.batch_size, steps=steps,
                     evaluate_every=max(steps // args.evaluations, 1), progress=not args.no_progress,
                     schedule=args.schedule)
    wall = time.perf_counter() - start
    accuracy = history.accuracy[-1]
    results = sa.Results(args.results)
    results.save_json("history.json", {"settings": vars(args), "steps": steps, "wall_seconds": wall,
                                       "train_seconds": history.seconds[-1], "test_accuracy": accuracy,
                                       "history": history.as_dict()})
    png = results.plot("training.png", {
        "training loss": ("step", "mean loss", {"loss": (history.steps, history.loss)}),
        "test accuracy": ("step", "accuracy", {"accuracy": (history.steps, history.accuracy)}),
    }, title="784-1000-800-400-10 on MNIST")
    print(f"test accuracy: {accuracy:.4f}  ({steps} steps, {history.seconds[-1]:.1f} s training, "
          f"{wall:.1f} s in all)")
    print(f"results: {results.path('history.json')}, {png}")
    return accuracy


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
