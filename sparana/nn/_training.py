"""A training loop with progress, periodic evaluation and a history of the figures."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from .._checks import check_integer


@dataclass
class History:
    """Figures recorded by :func:`fit`: per evaluation, the step, the mean training loss since
    the previous evaluation, the test accuracy and the seconds spent training so far."""

    steps: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    seconds: list = field(default_factory=list)

    def as_dict(self):
        return {"steps": self.steps, "loss": self.loss, "accuracy": self.accuracy, "seconds": self.seconds}


SCHEDULES = (None, "constant", "cosine", "linear")


def schedule_factor(schedule, step, steps):
    """Learning-rate multiplier before ``step`` (1-based) of ``steps``: 1, or decaying to 0 at the end."""
    progress = (step - 1) / steps
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - progress
    return 1.0


def fit(optimizer, loader, batch_size, steps=None, epochs=None, evaluate_every=None, progress=True,
        description="training", batch_fn=None, schedule=None):
    """Train ``optimizer.model`` for ``steps`` minibatches (or ``epochs`` of the loader).

    Every ``evaluate_every`` steps (and at the end) the test accuracy is
    recorded; the time spent evaluating is not counted in ``seconds``.
    ``batch_fn`` (default ``loader.minibatch``) draws a batch of a given size.
    ``schedule`` ('cosine' or 'linear') decays the learning rate to 0 over the
    run; the optimizer's rate is restored at the end.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if (steps is None) == (epochs is None):
        raise ValueError("give exactly one of steps= or epochs=")
    if steps is None:
        steps = int(epochs * (loader.training_size // batch_size))
    check_integer("steps", steps, low=1)
    evaluate_every = evaluate_every or steps
    batch_fn = batch_fn or loader.minibatch
    model = optimizer.model
    history = History()
    test_x, test_y = loader.test_data(), loader.test_labels()
    running, count, trained = 0.0, 0, 0.0
    base_rate = optimizer.learning_rate
    bar = tqdm(total=steps, desc=description, disable=not progress, unit="step", mininterval=1.0)
    for step in range(1, steps + 1):
        start = time.perf_counter()
        x, y = batch_fn(batch_size)
        optimizer.learning_rate = base_rate * schedule_factor(schedule, step, steps)
        running += optimizer.train_step(x, y)
        trained += time.perf_counter() - start
        count += 1
        bar.update(1)
        if step % evaluate_every == 0 or step == steps:
            accuracy = model.get_accuracy(test_x, test_y)
            history.steps.append(step)
            history.loss.append(running / count)
            history.accuracy.append(accuracy)
            history.seconds.append(trained)
            bar.set_postfix(loss=f"{running / count:.4f}", test_accuracy=f"{accuracy:.4f}")
            if not math.isfinite(running):
                bar.close()
                raise FloatingPointError(f"the training loss became {running} at step {step}; "
                                         "lower the learning rate")
            running, count = 0.0, 0
    bar.close()
    optimizer.learning_rate = base_rate
    return history
