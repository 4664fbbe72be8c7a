import os
import threading

from echo_helpers import shout
from extlib import suffix


class Model:
    def __init__(self, config, data_dir, secrets, environment):
        self.config = config
        self.data_dir = data_dir
        self.secrets = secrets
        self.environment = environment
        self.loads = 0
        self.greeting = None

    def load(self):
        self.loads += 1
        name = self.config["model_metadata"]["greeting_file"]
        self.greeting = (self.data_dir / name).read_text().strip()

    def preprocess(self, model_input):
        return {**model_input, "stages": ["preprocess"]}

    def predict(self, model_input):
        text = str(model_input.get("text", ""))
        return {
            "text": text,
            "shout": shout(text),
            "suffix": suffix(),
            "greeting": self.greeting,
            "loads": self.loads,
            "environment": self.environment,
            "env_var": os.environ.get("ECHO_MODE"),
            "thread": threading.current_thread().name,
            "stages": [*model_input["stages"], "predict"],
        }

    def postprocess(self, output):
        return {**output, "stages": [*output["stages"], "postprocess"]}
