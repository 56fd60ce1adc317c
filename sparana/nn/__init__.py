"""The model: layers (dense, sparse), Model, initialisation, losses, optimizers, presets, training loop."""

from ._layer import DenseLayer, DenseLinearLayer, DenseReluLayer, DenseSoftmaxLayer, Layer
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
from ._sparse import SparseLayer, SparseLinearLayer, SparseReluLayer, SparseSoftmaxLayer
from ._tracker import DistanceTracker
from ._training import History, fit
