"""Plain-text tables and JSON output shared by every subcommand."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A left-aligned text table; numbers are right-aligned."""
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], (int, float)) for row in rows) and bool(rows) for i in range(len(headers))]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def emit_json(payload: dict, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    json.dump(payload, stream, indent=2, default=_json_default)
    stream.write("\n")


def write_json(payload: dict, path) -> None:
    """Write a JSON file atomically (temporary file, then rename)."""
    path = Path(path)
    with tempfile.NamedTemporaryFile("w", dir=path.parent or ".", delete=False, suffix=".tmp") as handle:
        emit_json(payload, handle)
    os.replace(handle.name, path)


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
