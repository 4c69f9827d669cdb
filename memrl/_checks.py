"""Argument checks shared by the whole package: one message format for every boundary.

Each raises TypeError (wrong type) or ValueError (wrong value) naming the argument, what was
expected and what was given: ``"batch_size: expected an integer >= 1, got 0"``.
"""
from __future__ import annotations

import math
import numbers
from typing import Any


def check_int(name: str, value: Any, minimum: int | None = None) -> int:
    """``value`` as an int if it is an integer (not a bool) >= ``minimum``."""
    want = "an integer" if minimum is None else f"an integer >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected {want}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: expected {want}, got {value}")
    return int(value)


def check_seed(name: str, value: Any) -> int | None:
    """None or a non-negative integer."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected None or a non-negative integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{name}: expected None or a non-negative integer, got {value}")
    return int(value)


def check_number(name: str, value: Any, lo: float | None = None, hi: float | None = None, *,
                 open_low: bool = False, open_high: bool = False) -> float:
    """A finite real number (not a bool) in the range [lo, hi] (ends open where asked)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if lo is not None and (value < lo or (open_low and value <= lo)):
        raise ValueError(f"{name}: expected a value {'>' if open_low else '>='} {lo}, got {value}")
    if hi is not None and (value > hi or (open_high and value >= hi)):
        if open_high and lo is not None:
            raise ValueError(f"{name}: expected a value in [{lo}, {hi}), got {value}")
        raise ValueError(f"{name}: expected a value {'<' if open_high else '<='} {hi}, got {value}")
    return float(value)


def check_choice(name: str, value: Any, options) -> Any:
    if value not in options:
        raise ValueError(f"{name}: expected one of {list(options)}, got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {value!r}")
    return value
