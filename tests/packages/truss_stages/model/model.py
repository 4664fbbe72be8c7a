"""A Truss model written to Truss's docs: `**kwargs` init, Dict-annotated stages, and the
hooks Truss calls (setup_environment before load, a load the tests can hold open)."""

import os
import time
from pathlib import Path
from typing import Any, Dict

import numpy as np
from fastapi import HTTPException


class Model:
    def __init__(self, **kwargs) -> None:
        self._config = kwargs["config"]
        self._data_dir = kwargs["data_dir"]
        self._secrets = kwargs["secrets"]
        self._environment = kwargs.get("environment")
        self._setup_with = None
        self._loaded = False

    def setup_environment(self, environment: Dict[str, Any]) -> None:
        # Truss passes the environment as a mapping; runs before load()
        self._setup_with = {"name": environment.get("name"), "loaded": self._loaded}

    def load(self) -> None:
        gate = os.environ.get("TRUSS_TEST_LOAD_GATE")
        if gate:  # held open until the test opens the gate
            Path(gate + ".waiting").touch()
            while not Path(gate).exists():
                time.sleep(0.02)
        self._greeting = (Path(self._data_dir) / "greeting.txt").read_text().strip()
        self._loaded = True

    def preprocess(self, model_input: Dict) -> Dict:
        return {**model_input, "stages": ["preprocess"]}

    def predict(self, model_input: Dict) -> Dict:
        if "raise" in model_input:
            raise ValueError(f"bad value: {model_input['raise']}")
        if "http" in model_input:
            raise HTTPException(status_code=422, detail="bad steps")
        if "stream" in model_input:  # streaming with a postprocess: Truss's 412
            return (f"chunk {i}" for i in range(2))
        if "array" in model_input:  # a numpy array, from a msgpack body
            return {"doubled": model_input["array"] * 2, "stages": model_input["stages"]}
        env = self._environment
        return {
            "input": {k: v for k, v in model_input.items() if k != "stages"},
            "greeting": self._greeting,
            "environment": env.get("name") if env is not None else None,
            "setup_with": self._setup_with,
            "model_name": self._config.get("model_name"),
            "mean": np.float32(0.5),
            "counts": np.arange(3),
            "stages": [*model_input["stages"], "predict"],
        }

    def postprocess(self, model_output: Dict) -> Dict:
        return {**model_output, "stages": [*model_output["stages"], "postprocess"]}
