"""Argument checks shared by the whole package: each raises a ValueError that names the argument,
says what was expected and shows what was given.

``is_integer`` and ``is_number`` are the tests (True or False) behind them, for the places that
phrase their own message: an integer is a Python or NumPy integer but not a bool, a number is a
finite real that is not a bool.
"""

from __future__ import annotations

import math
import numbers


def is_integer(value, low=None, high=None) -> bool:
    """True for an integer (not a bool) in [low, high]; a bound that is None is not checked."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        return False
    return (low is None or value >= low) and (high is None or value <= high)


def check_integer(name, value, low=None, high=None) -> int:
    """``value`` as an int, or a ValueError unless it is an integer in [low, high]."""
    if not is_integer(value, low, high):
        if high is not None:
            expected = f"an integer in [{low}, {high}]"
        else:
            expected = {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(
                low, f"an integer >= {low}")
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return int(value)


def is_number(value) -> bool:
    """True for a finite real number that is not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_finite(name, value) -> float:
    """``value`` as a float, or a ValueError unless it is a finite number."""
    if not is_number(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_positive(name, value, allow_zero=False) -> float:
    """``value`` as a float, or a ValueError unless it is a finite number > 0 (>= 0 with ``allow_zero``)."""
    if not is_number(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} number, got {value!r}")
    return float(value)


def check_ratio(name, value, low=0.0, high=1.0, low_open=False):
    """Raise a ValueError unless ``value`` is a number in [low, high] (or (low, high] with ``low_open``)."""
    ok = is_number(value) and (low < value if low_open else low <= value) and value <= high
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}]"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")


def check_dropout(value, name="dropout"):
    """Raise a ValueError unless ``value`` is None or a fraction dropped in [0, 1)."""
    if value is None:
        return
    check_ratio(name, value)
    if value >= 1:
        raise ValueError(f"{name} must be below 1 (the fraction dropped), got {value!r}")


def check_std(std) -> float:
    """``std`` (a spread, as a fraction of the number of candidates) as a float, checked to be finite and >= 0."""
    if not is_number(std) or std < 0:
        raise ValueError(f"std must be a finite number >= 0 (a fraction of the number of candidates), got {std!r}")
    return float(std)
