"""OctoAI-style services the tests serve, written as such services are: ``service.py`` with a
direct ``Service`` subclass, importing ``octoai.service`` and ``octoai.types``."""

from __future__ import annotations

import textwrap
from pathlib import Path

# The seed's shape: Text in, Image out (JPEG via Image.from_pil), a pipeline made in setup(),
# an __init__ that does not call super().__init__(). Weights come from a local folder.
DIFFUSION = """
from pathlib import Path

from diffusers import DiffusionPipeline
from octoai.service import Service
from octoai.types import Image, Text

WEIGHTS = {weights!r}
LOG = Path({log!r})


class DiffusionOctoService(Service):
    def __init__(self):
        self.pipe = None

    def setup(self):
        with LOG.open("a") as log:
            log.write("setup\\n")
        self.pipe = DiffusionPipeline.from_pretrained(WEIGHTS)
        self.pipe.set_progress_bar_config(disable=True)

    def infer(self, prompt: Text) -> Image:
        with LOG.open("a") as log:
            log.write("infer\\n")
        image = self.pipe(prompt.text, num_inference_steps=2).images[0]
        return Image.from_pil(image)
"""

# Plain annotations with defaults, media both ways, a pydantic response, a model error, and
# a counter of calls running at once.
PLAIN = """
import threading
import time
from typing import List, Optional

from pydantic import BaseModel
from octoai.service import Service
from octoai.types import Audio, Image, Text


class Reply(BaseModel):
    flipped: Image
    audio: Audio
    size: List[int]


class PlainService(Service):
    def __init__(self):
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0

    def infer(
        self,
        prompt: str,
        steps: int = 3,
        scale: float = 1.5,
        tags: List[str] = [],
        text: Optional[Text] = None,
        image: Optional[Image] = None,
        audio: Optional[Audio] = None,
        wait: float = 0.0,
    ) -> Text:
        if prompt == "boom":
            raise RuntimeError("the service failed")
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(wait)
        with self.lock:
            self.running -= 1
        if prompt == "most":
            return Text(str(self.most))
        if prompt == "media":
            from PIL import ImageOps

            pil = image.to_pil()
            data, rate = audio.to_numpy()
            return Reply(
                flipped=Image.from_pil(ImageOps.mirror(pil), format="PNG"),
                audio=Audio.from_numpy(data, rate),
                size=list(pil.size),
            )
        words = [prompt, str(steps), str(scale), ",".join(tags)]
        if text is not None:
            words.append((text + "!").text)
        return Text(" ".join(words))
"""

# setup() waits for a gate file (and fails when told to); infer echoes.
SLOW = """
import time
from pathlib import Path

from octoai.service import Service
from octoai.types import Text

HERE = Path(__file__).parent


class SlowService(Service):
    def setup(self):
        while not (HERE / "gate").exists():
            time.sleep(0.01)
        if (HERE / "fail").exists():
            raise RuntimeError("setup failed on purpose")

    def infer(self, prompt: Text) -> Text:
        return Text("echo: ") + prompt
"""

# Several direct subclasses: the SDK picks the alphabetically last; Gamma is indirect.
SEVERAL = """
from pathlib import Path

from octoai.service import Service
from octoai.types import Text

HERE = Path(__file__).parent


class Alpha(Service):
    def setup(self):
        with (HERE / "setups").open("a") as f:
            f.write("alpha\\n")

    def infer(self, prompt: Text) -> Text:
        return Text("alpha")


class Beta(Service):
    def infer(self, prompt: Text) -> Text:
        return Text("beta")


class Gamma(Beta):
    def infer(self, prompt: Text) -> Text:
        return Text("gamma")
"""

# The seed's client, test_request.py: the inputs dict posted to {endpoint}/infer, the JSON
# printed with indent=4.
TEST_REQUEST = """
import argparse
import json

from octoai.client import Client

inputs = {"prompt": {"text": "Robot Dinosaur"}}


def main(endpoint):
    client = Client()
    response = client.infer(endpoint_url=f"{endpoint}/infer", inputs=inputs)
    print(json.dumps(response, indent=4))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", type=str, default="http://localhost:8080")
    args = parser.parse_args()
    main(args.endpoint)
"""

# Polls /healthcheck with the client (which warns when it first sees a 5xx), then infers.
HEALTH_THEN_INFER = """
import json
import sys

from octoai.client import Client

endpoint = sys.argv[1]
client = Client()
print(client.health_check(f"{endpoint}/healthcheck", timeout=300), flush=True)
print(json.dumps(client.infer(f"{endpoint}/infer", {"prompt": {"text": "late"}})), flush=True)
"""


def service_folder(root: Path, source: str, **values: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "service.py").write_text(textwrap.dedent(source.format(**values) if values else source))
    return root
