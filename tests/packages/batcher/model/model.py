import time


class Model:
    """Squares numbers; predict_batch handles several requests in one call."""

    def __init__(self):
        self.calls = []

    def predict(self, model_input):
        return self.predict_batch([model_input])[0]

    def predict_batch(self, inputs: list) -> list:
        self.calls.append(len(inputs))
        time.sleep(0.05)
        if any(item.get("short") for item in inputs):
            return [{"y": 0}] * (len(inputs) - 1)  # breaks the length contract on purpose
        return [{"y": item["x"] ** 2, "batch": len(inputs)} for item in inputs]
