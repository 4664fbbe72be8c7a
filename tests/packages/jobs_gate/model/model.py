import logging
import os
import threading

import impasto

log = logging.getLogger("gate")


class Model:
    @impasto.endpoint
    def work(self, steps: int = 3, gate: str | None = None, fail: bool = False, context=None):
        """``steps`` progress steps; before each, wait until the file ``gate`` exists."""
        log.warning("job %s working", context.request_id)
        marker = os.environ.get("GATE_RUNS")  # a file each run appends its id to
        if marker:
            with open(marker, "a") as fh:
                fh.write(f"{context.request_id}\n")
        pause = threading.Event()
        for i in range(steps):
            while gate and not os.path.exists(gate):
                context.check()  # a cancel or a shutdown stops it here
                pause.wait(0.01)
            context.check()
            context.progress(i + 1, steps)
        if fail:
            raise RuntimeError("the gate model failed on purpose")
        return {"steps": steps, "id": context.request_id}
