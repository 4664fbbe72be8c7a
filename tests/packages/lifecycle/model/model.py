import os
import time


class Model:
    def __init__(self, **kwargs):
        self.kwargs = sorted(kwargs)
        self.loaded = False

    def load(self):
        time.sleep(float(os.environ.get("LIFECYCLE_LOAD_SECONDS", "0")))
        if os.environ.get("LIFECYCLE_LOAD_FAIL"):
            raise RuntimeError("weights are missing (load failed on purpose)")
        self.loaded = True

    def predict(self, model_input):
        if model_input.get("raise"):
            raise ValueError(f"bad value: {model_input['raise']}")
        sleep = float(model_input.get("sleep", 0))
        if model_input.get("cooperative"):
            # a cooperative model would check a context; this one just sleeps in small steps
            end = time.monotonic() + sleep
            while time.monotonic() < end:
                time.sleep(0.01)
        else:
            time.sleep(sleep)
        return {"loaded": self.loaded, "kwargs": self.kwargs, "slept": sleep}
