"""A small on-disk cache of recoverability scores, keyed by model, calibration set and settings.

Entries are read back only after a structural check: a file of the wrong shape (edited by hand, written by another
version) is dropped with a warning and recomputed, never a traceback on every later run.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from graphopt.atomic import write_atomic
from graphopt.errors import GraphoptError

log = logging.getLogger(__name__)


def default_dir() -> Path:
    return Path(os.environ.get("GRAPHOPT_CACHE_DIR") or Path.home() / ".cache" / "graphopt")


def cache_key(*parts: bytes | str | dict) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, dict):
            part = json.dumps(part, sort_keys=True)
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


class ScoreCache:
    def __init__(self, folder: Path | None):
        self.folder = folder

    def _path(self, key: str) -> Path:
        return self.folder / "recoverability" / f"{key}.json"

    def get(self, key: str, valid: Callable[[object], bool]) -> dict | None:
        """The entry under `key` when there is one and `valid` accepts it; a damaged or ill-shaped entry is removed
        with a warning (so it is recomputed and overwritten) and None returned."""
        path = self._path(key) if self.folder is not None else None
        if path is None or not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text())
            if valid(entry):
                return entry
        except (OSError, ValueError):
            pass
        log.warning("ignoring the damaged cache entry %s; it will be recomputed", path)
        path.unlink(missing_ok=True)
        return None

    def put(self, key: str, value: dict) -> None:
        if self.folder is None:
            return
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(value).encode())
        except (OSError, GraphoptError):
            pass  # caching is an optimisation; an unwritable cache must not fail the run
