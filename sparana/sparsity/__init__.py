"""Sparsity: how important each weight is, which weights to pick, how many to prune, and pruning.

    _statistics   per-weight statistics: |W|, MAAV, MAV, signed magnitudes, fan-out ranks
    _selection    selection helpers on a statistics array (``sparana.parameter_selection``)
    _columns      choosing units (columns) for submodels: 'max', 'normal', 'random'
    _pruning      how much to prune per layer: ratios, target sparsities, schedules
    _lobotomizer  Lobotomizer: pruning by a statistic
    _selector     ParameterSelector: training masks for selected training
    _rewire       Rewirer: dynamic sparse training (SET, RigL) of sparse layers

How much to prune or rewire (``_pruning``) is kept apart from how weights are ranked (``_statistics``,
and for rewiring ``sparana.kernels.rewiring``).
"""

from . import _selection as selection
from ._columns import get_max_columns, get_normal_columns, get_random_columns
from ._lobotomizer import Lobotomizer
from ._rewire import Rewirer
from ._selector import ParameterSelector

__all__ = ["Lobotomizer", "ParameterSelector", "Rewirer", "get_max_columns", "get_normal_columns", "get_random_columns",
           "selection"]
