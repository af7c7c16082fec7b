"""The caller's signal handlers, kept across libraries that install their own: ray.init and torch's elastic
launcher both set a SIGTERM handler in the calling process and leave it there, which would replace the CLI's
(SIGTERM turned into a clean interrupt that removes partial outputs) in the middle of a run."""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def handlers_kept() -> Iterator[None]:
    """SIGINT and SIGTERM handlers as they were on entry, put back on exit (only the main thread has any)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kept = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in kept.items():
            signal.signal(signum, handler)
