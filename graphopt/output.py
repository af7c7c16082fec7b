"""Plain-text tables and JSON output shared by every subcommand."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, TextIO

from graphopt.atomic import write_atomic


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A left-aligned text table; numbers are right-aligned."""
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], (int, float)) for row in rows) and bool(rows) for i in range(len(headers))]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def emit_json(payload: dict, stream: TextIO | None = None) -> None:
    (stream or sys.stdout).write(to_json(payload))


def write_json(payload: dict, path) -> None:
    """Write a JSON file atomically."""
    write_atomic(Path(path), to_json(payload).encode())


def to_json(payload: dict) -> str:
    """Strict JSON text: a number that is not finite (an unmeasurable noise, say) becomes null, never the `NaN` or
    `Infinity` Python writes by default, which other JSON parsers reject."""
    plain = json.loads(json.dumps(payload, default=_json_default))
    return json.dumps(_finite(plain), indent=2, allow_nan=False) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _json_default(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
