import threading

import impasto


class Model:
    def __init__(self):
        self.gate = threading.Event()  # the test sets it to let blocked calls finish
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.produced = 0
        self.closed = 0
        self.last_context = None

    def _enter(self):
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)

    def _leave(self):
        with self.lock:
            self.active -= 1

    def preprocess(self, model_input):
        if model_input.get("block_pre"):
            self.gate.wait(30)
        return model_input

    def predict(self, model_input):
        self._enter()
        try:
            if model_input.get("block"):
                self.gate.wait(30)
            if model_input.get("raise_timeout"):
                raise TimeoutError("the feature store timed out")
            return {"max_active": self.max_active}
        finally:
            self._leave()

    @impasto.endpoint(name="chunks")
    def chunks(self, model_input, context):
        self.last_context = context
        self._enter()
        try:
            if model_input.get("fail"):
                raise ValueError("no chunks today")
            if model_input.get("raise_timeout"):
                raise TimeoutError("the feature store timed out")
            yield "first\n"
            if model_input.get("block"):
                self.gate.wait(30)
            for i in range(int(model_input.get("more", 1))):
                self.produced += 1
                yield f"more {i}\n"
        finally:
            self._leave()
            self.closed += 1
