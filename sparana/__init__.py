"""Sparana: sparse neural network research on NumPy/CuPy, and experiments on Ray.

The package, by concern (see docs/architecture.md):

    nn/        the model: layers, Model, initialisation, losses, optimizers, presets, training loop
    sparsity/  statistics, selection, pruning (Lobotomizer), parameter selection (ParameterSelector),
               rewiring (Rewirer: dynamic sparse training)
    compose/   Vulcanizer (submodels split off and melded back), ModelMixer
    io/        checkpoints, ModelSaver, job results; atomic writes
    data/      MNIST, IDX, memory-mapped Arrow, loaders
    kernels/   Numba (CPU) and CuPy (GPU) kernels, the optimizers' update rules
    cluster/   Ray: workers, experiments, checkpoints and resume, metrics
    compat.py  the original documentation's names (``model``, ``full_relu_layer``...)

The PEP 8 names are primary; the original documentation's names are aliases of them, so that
the original README's snippets run unchanged.
"""

from ._backend import Backend, BackendError, gpu_available, to_host
from .compat import *  # noqa: F403  (the original documentation's names)
from .compat import __all__ as _original_names
from .compose import ModelMixer, SubmodelPlan, Vulcanizer
from .data import DistributedLoader, Loader, SplitLoader, load_mnist
from .io import Checkpoint, CheckpointError, ModelSaver, Results, load_checkpoint, read_checkpoint, save_checkpoint
from .nn import (
    AdadadOptimizer,
    AdamOptimizer,
    DenseLayer,
    DenseLinearLayer,
    DenseReluLayer,
    DenseSoftmaxLayer,
    DistanceTracker,
    History,
    Layer,
    MadadadOptimizer,
    Model,
    Optimizer,
    SelectedAdamOptimizer,
    SelectedSGDOptimizer,
    SGDOptimizer,
    SparseLayer,
    SparseLinearLayer,
    SparseReluLayer,
    SparseSoftmaxLayer,
    documentation_model,
    fit,
    loss_and_gradient,
)
from .sparsity import Lobotomizer, ParameterSelector, Rewirer, get_max_columns, get_normal_columns, get_random_columns

__all__ = [
    "AdadadOptimizer", "AdamOptimizer", "Backend", "BackendError", "Checkpoint", "CheckpointError", "DenseLayer",
    "DenseLinearLayer", "DenseReluLayer", "DenseSoftmaxLayer", "DistanceTracker", "DistributedLoader", "History",
    "Layer", "Loader", "Lobotomizer", "MadadadOptimizer", "Model", "ModelMixer", "ModelSaver", "Optimizer",
    "ParameterSelector", "Results", "Rewirer", "SGDOptimizer", "SelectedAdamOptimizer", "SelectedSGDOptimizer", "SparseLayer",
    "SparseLinearLayer", "SparseReluLayer", "SparseSoftmaxLayer", "SplitLoader", "SubmodelPlan", "Vulcanizer",
    "documentation_model", "fit", "get_max_columns", "get_normal_columns", "get_random_columns", "gpu_available",
    "load_checkpoint", "load_mnist", "loss_and_gradient", "read_checkpoint", "save_checkpoint", "to_host",
    *_original_names,
]

__version__ = "0.1.0"
