"""The names of the original Sparana documentation, in one place.

Each is the PEP 8 object it stands for (``model is Model``), so that the original README's
snippets run unchanged after ``from sparana import *``. What the original did, and which options
reproduce it, is told in docs/original.md.
"""

from .compose import ModelMixer, Vulcanizer
from .data import DistributedLoader, Loader, SplitLoader
from .io import ModelSaver
from .nn import (
    AdadadOptimizer,
    AdamOptimizer,
    DenseLinearLayer,
    DenseReluLayer,
    DenseSoftmaxLayer,
    DistanceTracker,
    MadadadOptimizer,
    Model,
    SelectedAdamOptimizer,
    SelectedSGDOptimizer,
    SGDOptimizer,
    SparseLinearLayer,
    SparseReluLayer,
    SparseSoftmaxLayer,
)
from .sparsity import Lobotomizer, ParameterSelector
from .sparsity import _selection as parameter_selection  # the original's module of selection helpers

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
madadad_optimizer = MadadadOptimizer
adadad_optimizer = AdadadOptimizer
lobotomizer = Lobotomizer
parameter_selector = ParameterSelector
vulcanizer = Vulcanizer
model_mixer = ModelMixer
model_saver = ModelSaver
distance_tracker = DistanceTracker
loader = Loader
split_loader = SplitLoader
distributed_loader = DistributedLoader

__all__ = [
    "adadad_optimizer", "adam_optimizer", "distance_tracker", "distributed_loader", "full_linear_layer",
    "full_relu_layer", "full_softmax_layer", "loader", "lobotomizer", "madadad_optimizer", "model", "model_mixer",
    "model_saver", "parameter_selection", "parameter_selector", "selected_adam_optimizer", "selected_sgd_optimizer",
    "sgd_optimizer", "sparse_linear_layer", "sparse_relu_layer", "sparse_softmax_layer", "split_loader",
    "vulcanizer",
]
