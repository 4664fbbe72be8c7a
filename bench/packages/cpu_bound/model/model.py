"""A CPU-bound model: a pure-Python loop that holds the GIL, so one process runs one at a
time and more replicas (processes) are the only way to run more at once."""


class Model:
    def predict(self, model_input: dict) -> dict:
        n = int(model_input.get("n", 200_000))
        total = 0
        for i in range(n):
            total += i * i % 7
        return {"total": total}
