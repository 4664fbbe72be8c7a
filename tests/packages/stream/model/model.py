import asyncio
import threading
import time

import impasto


class Model:
    def __init__(self):
        self.gate = threading.Event()  # the test opens it once it has seen a chunk
        self.waited = []

    def predict(self, model_input):
        for i in range(int(model_input.get("n", 3))):
            time.sleep(float(model_input.get("delay", 0)))
            if i == 1 and model_input.get("gated"):
                self.waited.append(self.gate.wait(30))
            yield f"chunk {i}\n"

    @impasto.endpoint(name="events")
    async def events(self, model_input):
        for i in range(int(model_input.get("n", 3))):
            await asyncio.sleep(float(model_input.get("delay", 0)))
            yield {"step": i}
