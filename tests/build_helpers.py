"""Shared by the build tests: golden files, package folders of every kind, impasto's wheel."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import textwrap
from pathlib import Path

from conftest import PACKAGES, REPO

GOLDEN = Path(__file__).parent / "golden" / "build"
UPDATE = os.environ.get("IMPASTO_UPDATE_GOLDEN") == "1"

SAGEMAKER_INFERENCE = """
from diffusers import StableDiffusionPipeline


def model_fn(model_dir):
    return StableDiffusionPipeline.from_pretrained(model_dir)


def predict_fn(data, model):
    return model(data["inputs"], num_inference_steps=2).images[0]
"""

OCTOAI_SERVICE = """
from octoai.service import Service
from octoai.types import Image, Text


class TinyService(Service):
    def setup(self):
        self.ready = True

    def infer(self, prompt: Text) -> Image:
        from PIL import Image as PILImage

        return Image.from_pil(PILImage.new("RGB", (8, 8), (len(prompt.text) % 255, 0, 0)))
"""


def check_golden(name: str, text: str) -> None:
    """``text`` equals the golden file ``name`` (rewritten with IMPASTO_UPDATE_GOLDEN=1)."""
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"no golden file {path}; run with IMPASTO_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from its golden file {path}"


def sagemaker_folder(root: Path) -> Path:
    """A SageMaker model folder: code/inference.py and code/requirements.txt."""
    (root / "code").mkdir(parents=True)
    (root / "code" / "inference.py").write_text(SAGEMAKER_INFERENCE.lstrip())
    (root / "code" / "requirements.txt").write_text("diffusers>=0.35\n")
    return root


def octoai_folder(root: Path) -> Path:
    """An OctoAI-style service: service.py and requirements.txt."""
    root.mkdir(parents=True)
    (root / "service.py").write_text(OCTOAI_SERVICE.lstrip())
    (root / "requirements.txt").write_text("pillow>=10.3\n")
    return root


def zero_code_tiny(root: Path, model: str = "tiny-sd:latest") -> Path:
    """A diffusers package with no model.py: config.yaml alone."""
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(
        textwrap.dedent(
            f"""\
            model_name: tiny-zero
            diffusers:
              model: {model}
              tasks: [text2img]
              default_steps: 2
              default_width: 64
              default_height: 64
            """
        )
    )
    return root


EXAMPLES = REPO / "examples"
GPU_PACKAGE = PACKAGES / "build_gpu"
TRUSS_PACKAGE = PACKAGES / "truss_stages"  # config.yaml as Truss's own tooling writes it
TRUSS_SHARED = PACKAGES / "echo"  # a Truss model with external_package_dirs: [../shared_lib]

_wheel_dir: list[Path] = []


def impasto_wheelhouse() -> Path:
    """A folder holding impasto's wheel, built once per test process."""
    from impasto.build import shell

    if not _wheel_dir:
        folder = Path(tempfile.mkdtemp(prefix="impasto-test-wheel-"))
        atexit.register(shutil.rmtree, folder, True)
        shell.impasto_wheel(folder)
        _wheel_dir.append(folder)
    return _wheel_dir[0]


def copy_example(name: str, dest: Path) -> Path:
    return Path(shutil.copytree(EXAMPLES / name, dest / name))
