"""Atomic file writes: readers never see half a file, an interrupted write leaves nothing behind, and the new file
gets the permissions the user's umask gives any file they create (not the 0600 of `tempfile.mkstemp`)."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from graphopt.errors import GraphoptError


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to a hidden temporary file beside `path`, flush it to disk, then rename it over `path`.

    The temporary file is created with mode 0666 so the kernel applies the umask, as for any file the user makes.
    Any failure or interruption (SIGINT, SIGTERM) removes it again.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise GraphoptError(f"cannot write {path}: folder {folder} does not exist")
    tmp = folder / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise GraphoptError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
