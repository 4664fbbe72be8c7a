"""A no-op model with a sync ``predict``: impasto calls it in a worker thread."""


class Model:
    def predict(self, model_input: dict) -> dict:
        return model_input
