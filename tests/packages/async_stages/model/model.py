import asyncio


class Model:
    def __init__(self, config):
        self.name = config["model_name"]

    async def load(self):
        await asyncio.sleep(0.05)
        self.ready = True

    async def preprocess(self, model_input):
        return {"x": int(model_input["x"]), "trail": ["pre"]}

    async def predict(self, model_input):
        await asyncio.sleep(float(model_input.get("sleep", 0.2)))
        return {"y": model_input["x"] * 2, "trail": [*model_input["trail"], "predict"]}

    async def postprocess(self, output):
        return {**output, "trail": [*output["trail"], "post"], "model": self.name}
