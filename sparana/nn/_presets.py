"""Ready-made models: the original documentation's MNIST network."""

from __future__ import annotations

from ._dense import DenseLinearLayer, DenseReluLayer, DenseSoftmaxLayer
from ._model import Model

DOCUMENTATION_SIZES = (784, 1000, 800, 400, 10)


def documentation_model(comp_type=None, seed=None, head="linear", bias_constant=0.1, sizes=DOCUMENTATION_SIZES,
                        **options):
    """The original documentation's network, 784-1000-800-400-10: ReLU layers, a linear (or
    softmax) head, Xavier initialisation with biases 0.1. ``options`` go to :class:`Model`."""
    heads = {"linear": DenseLinearLayer, "softmax": DenseSoftmaxLayer}
    if head not in heads:
        raise ValueError(f"head must be one of {tuple(heads)}, got {head!r}")
    layers = [DenseReluLayer(size=n) for n in sizes[1:-1]] + [heads[head](size=sizes[-1])]
    model = Model(sizes[0], layers, comp_type=comp_type, seed=seed, **options)
    model.initialize_weights("Xavier", bias_constant=bias_constant)
    return model
