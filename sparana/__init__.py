"""Sparana: sparse neural network research on NumPy/CuPy, and experiments on Ray.

The PEP 8 names are primary; the original documentation's names (``model``,
``full_relu_layer``, ``adam_optimizer``...) are aliases of them, so that the
original README's snippets run unchanged.
"""

from ._backend import Backend, BackendError, gpu_available, to_host
from ._checkpoint import Checkpoint, CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from ._layers import DenseLayer, DenseLinearLayer, DenseReluLayer, DenseSoftmaxLayer, Layer
from ._lobotomizer import Lobotomizer
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
from ._sparse_layers import SparseLayer, SparseLinearLayer, SparseReluLayer, SparseSoftmaxLayer
from ._presets import documentation_model
from ._results import Results
from ._saver import ModelSaver
from ._tracker import DistanceTracker
from ._training import History, fit
from .data import DistributedLoader, Loader, SplitLoader, load_mnist

# The original documentation's names.
model = Model
full_relu_layer = DenseReluLayer
full_linear_layer = DenseLinearLayer
full_softmax_layer = DenseSoftmaxLayer
sparse_relu_layer = SparseReluLayer
sparse_linear_layer = SparseLinearLayer
sparse_softmax_layer = SparseSoftmaxLayer
sgd_optimizer = SGDOptimizer
adam_optimizer = AdamOptimizer
selected_adam_optimizer = SelectedAdamOptimizer
selected_sgd_optimizer = SelectedSGDOptimizer
lobotomizer = Lobotomizer
madadad_optimizer = MadadadOptimizer
adadad_optimizer = AdadadOptimizer
loader = Loader
model_saver = ModelSaver
distance_tracker = DistanceTracker
split_loader = SplitLoader
distributed_loader = DistributedLoader

__version__ = "0.1.0"
