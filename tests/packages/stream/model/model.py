import asyncio
import time

import impasto


class Model:
    def predict(self, model_input):
        for i in range(int(model_input.get("n", 3))):
            time.sleep(float(model_input.get("delay", 0)))
            yield f"chunk {i}\n"

    @impasto.endpoint(name="events")
    async def events(self, model_input):
        for i in range(int(model_input.get("n", 3))):
            await asyncio.sleep(float(model_input.get("delay", 0)))
            yield {"step": i}
