"""A small on-disk cache of recoverability scores, keyed by model, calibration set and settings."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


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

    def get(self, key: str) -> dict | None:
        if self.folder is None or not self._path(key).exists():
            return None
        try:
            return json.loads(self._path(key).read_text())
        except (OSError, ValueError):
            return None  # a damaged entry is recomputed

    def put(self, key: str, value: dict) -> None:
        if self.folder is None:
            return
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
                json.dump(value, handle)
            os.replace(handle.name, path)
        except OSError:
            pass  # caching is an optimisation; an unwritable cache must not fail the run
