import asyncio


class Model:
    def __init__(self, config):
        self.name = config["model_name"]
        self.active = 0
        self.max_active = 0
        self.met = asyncio.Event()

    async def load(self):
        await asyncio.sleep(0.05)
        self.ready = True

    async def preprocess(self, model_input):
        return {**model_input, "x": int(model_input["x"]), "trail": ["pre"]}

    async def predict(self, model_input):
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            meet = int(model_input.get("meet", 0))
            if meet and self.active >= meet:
                self.met.set()
            if meet:  # wait until `meet` predictions run at once (never, if they are serial)
                await asyncio.wait_for(self.met.wait(), 10)
            else:
                await asyncio.sleep(float(model_input.get("sleep", 0.2)))
        finally:
            self.active -= 1
        return {"y": model_input["x"] * 2, "trail": [*model_input["trail"], "predict"]}

    async def postprocess(self, output):
        return {**output, "trail": [*output["trail"], "post"], "model": self.name}
