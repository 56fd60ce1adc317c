"""Sparana: sparse neural network research on NumPy/CuPy, and experiments on Ray.

The PEP 8 names are primary; the original documentation's names (``model``,
``full_relu_layer``, ``adam_optimizer``...) are aliases of them, so that the
original README's snippets run unchanged.
"""

from .sparsity import _selection as parameter_selection
from ._backend import Backend, BackendError, gpu_available, to_host
from .io._checkpoint import Checkpoint, CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from .sparsity._columns import get_max_columns, get_normal_columns, get_random_columns
from .nn._dense import DenseLayer, DenseLinearLayer, DenseReluLayer, DenseSoftmaxLayer
from .nn._layer import Layer
from .sparsity._lobotomizer import Lobotomizer
from .nn._losses import loss_and_gradient
from .compose._mixer import ModelMixer
from .nn._model import Model
from .nn._optimizers import (
    AdadadOptimizer,
    AdamOptimizer,
    MadadadOptimizer,
    Optimizer,
    SelectedAdamOptimizer,
    SelectedSGDOptimizer,
    SGDOptimizer,
)
from .nn._presets import documentation_model
from .io._results import Results
from .io._saver import ModelSaver
from .sparsity._selector import ParameterSelector
from .nn._sparse import SparseLayer, SparseLinearLayer, SparseReluLayer, SparseSoftmaxLayer
from .nn._tracker import DistanceTracker
from .nn._training import History, fit
from .compose._vulcanizer import SubmodelPlan, Vulcanizer
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
model_mixer = ModelMixer
parameter_selector = ParameterSelector
vulcanizer = Vulcanizer
distance_tracker = DistanceTracker
split_loader = SplitLoader
distributed_loader = DistributedLoader

__all__ = [
    "AdadadOptimizer",
    "AdamOptimizer",
    "Backend",
    "BackendError",
    "Checkpoint",
    "CheckpointError",
    "DenseLayer",
    "DenseLinearLayer",
    "DenseReluLayer",
    "DenseSoftmaxLayer",
    "DistanceTracker",
    "DistributedLoader",
    "History",
    "Layer",
    "Loader",
    "Lobotomizer",
    "MadadadOptimizer",
    "Model",
    "ModelMixer",
    "ModelSaver",
    "Optimizer",
    "ParameterSelector",
    "Results",
    "SelectedAdamOptimizer",
    "SelectedSGDOptimizer",
    "SGDOptimizer",
    "SparseLayer",
    "SparseLinearLayer",
    "SparseReluLayer",
    "SparseSoftmaxLayer",
    "SplitLoader",
    "SubmodelPlan",
    "Vulcanizer",
    "adadad_optimizer",
    "adam_optimizer",
    "distance_tracker",
    "distributed_loader",
    "documentation_model",
    "fit",
    "full_linear_layer",
    "full_relu_layer",
    "full_softmax_layer",
    "get_max_columns",
    "get_normal_columns",
    "get_random_columns",
    "gpu_available",
    "load_checkpoint",
    "load_mnist",
    "loader",
    "lobotomizer",
    "loss_and_gradient",
    "madadad_optimizer",
    "model",
    "model_mixer",
    "model_saver",
    "parameter_selection",
    "parameter_selector",
    "read_checkpoint",
    "save_checkpoint",
    "selected_adam_optimizer",
    "selected_sgd_optimizer",
    "sgd_optimizer",
    "sparse_linear_layer",
    "sparse_relu_layer",
    "sparse_softmax_layer",
    "split_loader",
    "to_host",
    "vulcanizer",
]

__version__ = "0.1.0"
