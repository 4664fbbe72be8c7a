"""A clean exit status after a graceful SIGTERM shutdown.

uvicorn drains on SIGTERM and then raises the signal again, so the process would end with
the signal's status (143) even though every request finished. Orchestrators, SageMaker and
OctoAI-style deployments read a drained stop as exit 0.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def exit_zero_after_sigterm() -> Iterator[None]:
    """While the block runs (the server), a SIGTERM re-raised after uvicorn's graceful
    shutdown ends the block normally instead of killing the process."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
