"""A no-op model: the serving-overhead benchmark measures everything around this call."""


class Model:
    async def predict(self, model_input: dict) -> dict:
        return model_input
