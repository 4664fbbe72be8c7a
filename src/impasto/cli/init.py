"""``impasto init NAME``: scaffold a package folder."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import PackageError
from .output import console, handle_errors

CONFIG = """\
# impasto package config. Every key is optional; see docs/ for the full list.
model_name: {name}
description: ""
model_class_name: Model
model_module_dir: model
data_dir: data
bundled_packages_dir: packages
external_package_dirs: []
requirements: []
environment_variables: {{}}
secrets: {{}}
resources:
  cpu: "1"
  memory: 2Gi
  use_gpu: false
runtime:
  predict_concurrency: 1
  max_queue: 64
  predict_timeout_s: 60
"""

MODEL = '''\
"""The {name} model. impasto calls load() once, then predict() for each request."""

from pathlib import Path
from typing import Any


class Model:
    # __init__ may take any of: config (dict), data_dir (Path), secrets (mapping),
    # environment (str | None), or **kwargs. Ask only for what you use.
    def __init__(self, config: dict, data_dir: Path, secrets: Any) -> None:
        self._config = config
        self._data_dir = data_dir  # files you put in data/
        self._secrets = secrets  # names listed under `secrets:` in config.yaml
        self._model = None

    def load(self) -> None:
        # Runs once, in the background, before any request reaches predict().
        # Load weights here, e.g. from self._data_dir.
        self._model = lambda text: text[::-1]

    # Optional: preprocess(self, model_input) and postprocess(self, model_output).
    # Any of these may be `async def`. Annotate predict's input with a pydantic model to
    # get validation (422 naming the field) and an OpenAPI schema. Return a generator to
    # stream chunks.
    def predict(self, model_input: dict) -> dict:
        text = str(model_input.get("text", ""))
        return {{"output": self._model(text)}}
'''

EXAMPLES = """\
# Named inputs: `impasto predict . --example hello`
- name: hello
  input:
    text: hello world
"""


@handle_errors
def init(
    name: str = typer.Argument(..., help="Folder to create (its name becomes model_name)."),
) -> None:
    """Scaffold a package: config.yaml, model/model.py, data/, packages/, examples.yaml.

    Example: impasto init my-model
    """
    root = Path(name)
    if root.exists() and any(root.iterdir()):
        raise PackageError(f"{root} already exists and is not empty; pick another name")
    model_name = root.resolve().name
    (root / "model").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    (root / "packages").mkdir(exist_ok=True)
    (root / "config.yaml").write_text(CONFIG.format(name=model_name))
    (root / "model" / "__init__.py").write_text("")
    (root / "model" / "model.py").write_text(MODEL.format(name=model_name))
    (root / "examples.yaml").write_text(EXAMPLES)
    (root / "data" / ".gitkeep").write_text("")
    (root / "packages" / ".gitkeep").write_text("")
    console.print(f"Created package [bold]{root}[/bold]. Next: impasto serve {root}")
