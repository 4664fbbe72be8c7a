class Model:
    def __init__(self, config):
        self.config = config

    def predict(self, model_input):
        return {"model_name": self.config["model_name"], "metadata": self.config["model_metadata"]}
