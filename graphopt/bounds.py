"""Number options checked where they are parsed: finite, in range, and a message that gives the unit.

`float()` accepts "nan" and "inf", and both pass most comparisons they meet later (every comparison with NaN is
false), so unchecked they hang timing loops or end a run with exit 0 and `Infinity` in its report.
"""
from __future__ import annotations

import math

from graphopt.errors import GraphoptError


def check_range(flag: str, value: float, unit: str, low: float, high: float = math.inf, *, low_open: bool = False,
                high_open: bool = False) -> None:
    """Raise a one-line GraphoptError unless `value` is finite and within [low, high] (ends open where asked).

    `unit` reads after "a finite": "number of seconds", "ratio", "learning rate".
    """
    above = low < value if low_open else low <= value
    below = value < high if high_open else value <= high
    if not (math.isfinite(value) and above and below):
        lower = f"above {low:g}" if low_open else f"of {low:g} or more"
        if math.isinf(high):
            span = lower
        else:
            span = f"{'above' if low_open else 'from'} {low:g} {'and below' if high_open else 'up to'} {high:g}"
        raise GraphoptError(f"{flag} must be a finite {unit} {span} (got {value:g})")


def check_threads(threads: int | None, option: str = "--threads") -> None:
    """--threads, --work-threads: None or 0 leave the default; a negative count is refused."""
    if threads is not None and threads < 0:
        raise GraphoptError(f"{option} must be 0 (the default) or more (got {threads})")
