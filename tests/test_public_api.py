"""The public names: the lists below are those of the package before its layout changed (issue 11).

A name added to or removed from ``sparana.__all__`` or ``sparana.cluster.__all__`` must show up
here as a deliberate change of this file.
"""

import pytest

import sparana as sa

PUBLIC = [
    "AdadadOptimizer", "AdamOptimizer", "Backend", "BackendError", "Checkpoint", "CheckpointError", "DenseLayer",
    "DenseLinearLayer", "DenseReluLayer", "DenseSoftmaxLayer", "DistanceTracker", "DistributedLoader", "History",
    "Layer", "Loader", "Lobotomizer", "MadadadOptimizer", "Model", "ModelMixer", "ModelSaver", "Optimizer",
    "ParameterSelector", "Results", "SGDOptimizer", "SelectedAdamOptimizer", "SelectedSGDOptimizer", "SparseLayer",
    "SparseLinearLayer", "SparseReluLayer", "SparseSoftmaxLayer", "SplitLoader", "SubmodelPlan", "Vulcanizer",
    "adadad_optimizer", "adam_optimizer", "distance_tracker", "distributed_loader", "documentation_model", "fit",
    "full_linear_layer", "full_relu_layer", "full_softmax_layer", "get_max_columns", "get_normal_columns",
    "get_random_columns", "gpu_available", "load_checkpoint", "load_mnist", "loader", "lobotomizer",
    "loss_and_gradient", "madadad_optimizer", "model", "model_mixer", "model_saver", "parameter_selection",
    "parameter_selector", "read_checkpoint", "save_checkpoint", "selected_adam_optimizer", "selected_sgd_optimizer",
    "sgd_optimizer", "sparse_linear_layer", "sparse_relu_layer", "sparse_softmax_layer", "split_loader", "to_host",
    "vulcanizer",
] + [  # added since: dynamic sparse training (issue 15)
    "Rewirer",
]

CLUSTER = [
    "ClusterError", "ClusterInfo", "ExperimentResult", "LocalPool", "Pruning", "RayPool", "TrainSettings",
    "WorkerCore", "init", "is_local_mode", "load_payload", "local_workers", "model_payload", "ray_workers",
    "shutdown", "train_and_mix", "vulcanize",
] + [  # added since the restructuring: the Grafana dashboard (issue 16), configs, sweeps and reports (14)
    "add_grafana_dashboard", "Config", "ConfigError", "ReportError", "SweepError", "build_model",
    "experiment_config", "load_config", "load_data", "run_experiment", "run_sweep", "write_report",
] + [  # dynamic sparse training between rounds (issue 15); a sweep whose trials did not all finish
    "Rewiring", "SweepUnfinished",
]

# The selection helpers of the original's parameter_selection module (``sa.parameter_selection``).
SELECTION = [
    "candidate_count", "check_std", "get_k_biggest", "get_k_max", "get_k_min", "get_k_smallest", "get_maxs",
    "get_negatives", "get_normal_high", "get_normal_low", "get_normal_split", "get_positives", "get_ratio_biggest",
    "get_uniform", "get_zeros", "half_normal_ranks", "ranked", "selection_count",
]

# The original documentation's names and the PEP 8 objects they stand for.
ALIASES = {
    "model": "Model", "full_relu_layer": "DenseReluLayer", "full_linear_layer": "DenseLinearLayer",
    "full_softmax_layer": "DenseSoftmaxLayer", "sparse_relu_layer": "SparseReluLayer",
    "sparse_linear_layer": "SparseLinearLayer", "sparse_softmax_layer": "SparseSoftmaxLayer",
    "sgd_optimizer": "SGDOptimizer", "adam_optimizer": "AdamOptimizer",
    "selected_adam_optimizer": "SelectedAdamOptimizer", "selected_sgd_optimizer": "SelectedSGDOptimizer",
    "lobotomizer": "Lobotomizer", "madadad_optimizer": "MadadadOptimizer", "adadad_optimizer": "AdadadOptimizer",
    "loader": "Loader", "model_saver": "ModelSaver", "model_mixer": "ModelMixer",
    "parameter_selector": "ParameterSelector", "vulcanizer": "Vulcanizer", "distance_tracker": "DistanceTracker",
    "split_loader": "SplitLoader", "distributed_loader": "DistributedLoader",
}

# Methods the documentation and the jobs use, per class (a class may have more).
METHODS = {
    "Model": ["activations", "backprop", "convert_comp_type", "convert_to_dense", "convert_to_sparse", "forward",
              "get_accuracy", "get_top_k_accuracy", "gradients", "initialize_sparse_weights", "initialize_weights",
              "load_weights", "loss", "one2ratio", "outputs", "parameter_count", "partial_outputs",
              "remove_activations", "reseed", "softmax_output", "targets", "top_k_accuracy"],
    "DenseLayer": ["activation_backward", "backward", "bind", "dense_weights", "forward", "keep_only",
                   "set_parameters", "value_keys"],
    "SparseLayer": ["activation_backward", "backward", "bind", "dense_weights", "forward", "keep_only",
                    "set_parameters", "to_scipy", "value_keys"],
    "Optimizer": ["get_gradients", "load_state_dict", "state_arrays", "state_dict", "train_step"],
    "Lobotomizer": ["get_MAAV", "get_MAV", "get_absolute_values", "get_activation_ranks", "get_negative_values",
                    "get_positive_values", "get_random", "get_sparse_masks", "prune_all_negative", "prune_smallest",
                    "set_statistics", "sparsities"],
    "ParameterSelector": ["add_output_class", "clear_masks", "get_bottom", "get_random", "get_top",
                          "get_top_gaussian", "initialize_subsets", "print_ratios", "trainable_fractions"],
    "Vulcanizer": ["check_split", "chosen_units", "discard", "get_average_zeros", "mind_meld", "plan",
                   "revert_weights", "split_model", "split_models", "submodel_inputs"],
    "ModelMixer": ["add_MAAV_stats", "add_absolute_values", "add_model", "add_stats", "average_all",
                   "importance_weighted_average", "rank_and_zero", "replace_all"],
    "ModelSaver": ["load", "load_model", "load_sparse_parameters", "pickle_model", "pickle_sparse_parameters",
                   "restore_full_model", "restore_model", "restore_sparse_parameters", "save", "store_model",
                   "store_sparse_parameters", "transfer_partial_model"],
    "Checkpoint": ["build_model", "build_optimizer", "layer_tensors", "load_into"],
    "DistanceTracker": ["checkpoint", "get_cosines", "get_self_cosines", "plot"],
}


def test_the_public_names_are_those_of_before():
    assert sorted(sa.__all__) == sorted(PUBLIC)
    assert all(hasattr(sa, name) for name in PUBLIC)


def test_the_cluster_names_are_those_of_before():
    cluster = pytest.importorskip("sparana.cluster")
    assert sorted(cluster.__all__) == sorted(CLUSTER)
    assert all(hasattr(cluster, name) for name in CLUSTER)


def test_the_original_names_are_aliases_and_star_import_gives_them():
    namespace = {}
    exec("from sparana import *", namespace)
    for alias, name in ALIASES.items():
        assert getattr(sa, alias) is getattr(sa, name)
        assert namespace[alias] is getattr(sa, name)


def test_the_selection_helpers_are_all_there():
    assert all(callable(getattr(sa.parameter_selection, name)) for name in SELECTION)


@pytest.mark.parametrize("cls", sorted(METHODS))
def test_the_documented_methods_are_all_there(cls):
    missing = [name for name in METHODS[cls] if not callable(getattr(getattr(sa, cls), name, None))]
    assert not missing
