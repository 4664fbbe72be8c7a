import logging
import os
import threading

import impasto

log = logging.getLogger("gate")


class Model:
    def __init__(self, secrets=None):
        self.secrets = secrets

    def load(self):
        self.pid = os.getpid()

    @impasto.endpoint
    def work(
        self, steps: int = 2, gate: str | None = None, arrived: str | None = None, context=None
    ):
        """``steps`` progress steps; before each, wait until the file ``gate`` exists. A run
        first appends its process id to the file ``arrived`` (the test counts arrivals)."""
        if arrived:
            with open(arrived, "a") as fh:
                fh.write(f"{self.pid}\n")
        pause = threading.Event()
        for i in range(steps):
            while gate and not os.path.exists(gate):
                context.check()  # a cancel or a shutdown stops it here
                pause.wait(0.01)
            context.check()
            context.progress(i + 1, steps)
        log.warning("gate run %s done", context.request_id)
        return {"steps": steps, "pid": self.pid}

    @impasto.endpoint
    def secret(self, check: bool = True) -> dict:
        """Whether the secret reached the replica (its length, never its value)."""
        token = (self.secrets or {}).get("token")
        return {"length": len(token) if token else 0}

    @impasto.endpoint
    def count(self, n: int = 3):
        """A streaming endpoint: ``n`` chunks."""
        for i in range(n):
            yield {"i": i}
