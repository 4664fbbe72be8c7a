import logging
import threading

import impasto

log = logging.getLogger("steps.model")


class Model:
    def __init__(self):
        self.gate = threading.Event()  # the test sets it to let a blocked call go on
        self.blocked = threading.Event()  # set while a call waits on the gate
        self.contexts = []
        self.steps_done = 0

    @impasto.endpoint(name="count")
    def count(self, n: int = 3, block_at: int = -1, context=None):
        """Count to n, one progress event per step; wait for the gate before step block_at."""
        self.contexts.append(context)
        log.info("counting to %d", n)
        print(f"printed while counting to {n}")
        for i in range(n):
            if i == block_at:
                self.blocked.set()
                self.gate.wait(30)
            context.check()
            self.steps_done += 1
            context.progress(i + 1, n)
        return {"counted": n}

    @impasto.endpoint(name="chunks")
    def chunks(self, n: int = 3, fail_at: int = -1):
        for i in range(n):
            if i == fail_at:
                raise RuntimeError(f"chunk {i} broke")
            yield {"i": i}
