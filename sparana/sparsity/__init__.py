"""Sparsity: weight statistics, selection helpers, pruning (the Lobotomizer), parameter selection."""

from . import _selection as selection
from ._columns import get_max_columns, get_normal_columns, get_random_columns
from ._lobotomizer import Lobotomizer
from ._selector import ParameterSelector
