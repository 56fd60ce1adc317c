"""The model, on any backend: layers (dense, sparse), Model, initialisation, losses, optimizers,
presets, the training loop, and the class-distance tracker.

    _activations  ReLU, linear, softmax: forward, derivative, constant folding
    _layer        the layer base: masks, dropout, forward and backward side by side
    _dense        dense layers (W of shape (n_in, n_out), prune masks)
    _sparse       sparse layers (CSR (n_out, n_in), SpMM / SDDMM kernels)
    _keys         where each trainable entry sits in the dense matrix; key matching
    _batches      batches in, checked: feature-major inputs, one-hot targets
    _model        Model: the layer list, forward, backward, accuracy
    _initializers Xavier, float std, lottery-ticket resets, random sparse patterns
    _surgery      device moves, dense/sparse conversions, dead-unit removal
    _losses       cross-entropy and quadratic losses
    _optimizers   SGD, Adam, madadad, adadad (their rules: sparana.kernels.rules)
    _presets      the documentation's MNIST model
    _training     fit(): a loop with progress and periodic evaluation
    _tracker      DistanceTracker: class-pair cosine distances per layer
"""

from ._dense import DENSE_LAYERS, DenseLayer, DenseLinearLayer, DenseReluLayer, DenseSoftmaxLayer
from ._layer import Layer
from ._losses import loss_and_gradient
from ._model import Model
from ._optimizers import (
    AdadadOptimizer,
    AdamOptimizer,
    MadadadOptimizer,
    Optimizer,
    SelectedAdamOptimizer,
    SelectedSGDOptimizer,
    SGDOptimizer,
)
from ._presets import documentation_model
from ._sparse import SPARSE_LAYERS, SparseLayer, SparseLinearLayer, SparseReluLayer, SparseSoftmaxLayer
from ._tracker import DistanceTracker
from ._training import History, fit

__all__ = [
    "DENSE_LAYERS", "SPARSE_LAYERS", "AdadadOptimizer", "AdamOptimizer", "DenseLayer", "DenseLinearLayer",
    "DenseReluLayer", "DenseSoftmaxLayer", "DistanceTracker", "History", "Layer", "MadadadOptimizer", "Model",
    "Optimizer", "SGDOptimizer", "SelectedAdamOptimizer", "SelectedSGDOptimizer", "SparseLayer", "SparseLinearLayer",
    "SparseReluLayer", "SparseSoftmaxLayer", "documentation_model", "fit", "loss_and_gradient",
]
