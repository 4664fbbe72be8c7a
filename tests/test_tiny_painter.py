"""The tiny painter (examples/tiny-painter) draws what it is asked, served by `impasto serve`.

The committed pipeline is served exactly as a user serves it: a real server on a loopback
port, weights imported into a fresh model store on first load. Its images are read back
with the example's own judge (background, color, shape, count). The training script is run
for a few steps to show it still trains; the committed model is never retrained here.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, ProcessServer
from painter_example import EXAMPLE, example_module

pytestmark = pytest.mark.timeout(900)

DATA = EXAMPLE / "data"
SEEDS = 8


scenes = example_module("scenes")
judge = example_module("judge")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("painter-home")


@pytest.fixture(scope="module")
def painter(home: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("painter-log") / "server.log"
    server = ProcessServer(EXAMPLE, env={"IMPASTO_HOME": str(home)}, log=log)
    server.client.timeout = 300
    server.wait_live(120)
    server.wait_ready(300)
    yield server
    server.stop()


def _images(body: dict) -> list[Image.Image]:
    out = []
    for item in body["images"]:
        data = base64.b64decode(item["data"].split(",", 1)[-1])
        out.append(Image.open(io.BytesIO(data)).convert("RGB"))
    return out


def _b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_shipped_files_match_their_checksums_and_stay_small() -> None:
    sums = {}
    for line in (DATA / "SHA256SUMS").read_text().splitlines():
        digest, rel = line.split(maxsplit=1)
        sums[rel] = digest
    files = sorted(p for p in (DATA / "pipeline").rglob("*") if p.is_file())
    assert {p.relative_to(DATA).as_posix() for p in files} == set(sums)
    for path in files:
        assert (
            hashlib.sha256(path.read_bytes()).hexdigest() == sums[path.relative_to(DATA).as_posix()]
        )
    assert sum(p.stat().st_size for p in files) < 10 * 2**20
    index = json.loads((DATA / "pipeline" / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert all(p.suffix != ".bin" for p in files)  # safetensors only


def test_every_word_of_the_painter_is_one_token() -> None:
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(DATA / "pipeline" / "tokenizer")
    for word in scenes.WORDS:
        assert tok.tokenize(word) == [f"{word}</w>"]
    ids = tok("a red circle").input_ids
    assert len(ids) == 5 and ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id


def test_every_color_and_shape_is_drawn_as_asked(painter: ProcessServer) -> None:
    """Each color x shape prompt, seeds 0-7 in one request (num_images=8, seeds seed..seed+7),
    at the example's default steps and guidance."""
    tally: dict[str, Counter] = {"color": Counter(), "shape": Counter()}
    misses = []
    for color, shape in itertools.product(scenes.COLORS, scenes.SHAPES):
        asked = scenes.Scene(color, shape)
        r = painter.client.post(
            "/text2img", json={"prompt": asked.prompt, "seed": 0, "num_images": SEEDS}
        )
        assert r.status_code == 200, r.text
        images = _images(r.json())
        assert len(images) == SEEDS and all(img.size == (64, 64) for img in images)
        for seed, image in enumerate(images):
            seen = judge.judge(image)
            tally["color"][color] += seen.color == color
            tally["shape"][shape] += seen.shape == shape
            if (seen.color, seen.shape) != (color, shape):
                misses.append(f"{asked.prompt!r} seed {seed}: {seen}")
    n = len(scenes.COLORS) * len(scenes.SHAPES) * SEEDS
    color_rate = sum(tally["color"].values()) / n
    shape_rate = sum(tally["shape"].values()) / n
    detail = f"colors {dict(tally['color'])}, shapes {dict(tally['shape'])}; misses: {misses[:12]}"
    assert color_rate >= 0.95, detail
    assert shape_rate >= 0.80, detail


def test_the_readme_serves_the_painter_and_its_first_curl_draws_a_red_circle(
    painter: ProcessServer,
) -> None:
    """The README's serve command and first curl, as written: its body and Accept header."""
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    serve = next(b for b in blocks if "impasto serve examples/" in b)
    assert serve.strip().endswith("impasto serve examples/tiny-painter")
    curl = next(b for b in blocks if b.lstrip().startswith("curl") and "/text2img" in b)
    body = json.loads(re.search(r"-d '(\{.*?\})'", curl).group(1))
    assert body["prompt"] == "a red circle"
    shown = re.search(r"!\[[^\]]*\]\((docs/tiny-painter[^)]*\.png)\)", readme).group(1)
    r = painter.client.post("/text2img", json=body, headers={"Accept": "image/png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    drawn = Image.open(io.BytesIO(r.content))
    seen = judge.judge(drawn)
    assert (seen.background, seen.color, seen.shape, seen.count) == ("white", "red", "circle", 1)
    # the picture the README shows is the one this request draws (up to float rounding,
    # which differs between CPUs)
    shown_pixels = np.asarray(Image.open(REPO / shown).convert("RGB"), np.int16)
    assert np.abs(np.asarray(drawn.convert("RGB"), np.int16) - shown_pixels).mean() < 2


def test_img2img_keeps_the_picture_at_low_strength_and_follows_the_prompt_at_high(
    painter: ProcessServer,
) -> None:
    import random

    rng = random.Random(5)
    init = scenes.draw(scenes.Scene("green", "square"), rng)
    kept = painter.client.post(
        "/img2img",
        json={"prompt": "a green square", "image": _b64(init), "strength": 0.3, "seed": 1},
    )
    assert kept.status_code == 200, kept.text
    image = _images(kept.json())[0]
    assert np.abs(np.asarray(image, np.int16) - np.asarray(init, np.int16)).mean() < 20
    changed = painter.client.post(
        "/img2img",
        json={"prompt": "a blue square", "image": _b64(init), "strength": 0.9, "seed": 0,
              "num_images": 4},
    )  # fmt: skip
    assert changed.status_code == 200, changed.text
    colors = [judge.judge(img).color for img in _images(changed.json())]
    assert colors.count("blue") >= 3, colors


def test_inpaint_repaints_the_masked_half_and_keeps_the_rest(painter: ProcessServer) -> None:
    init = Image.new("RGB", (64, 64), scenes.BACKGROUNDS["white"])
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 64, 32))  # repaint the top half
    r = painter.client.post(
        "/inpaint",
        json={"prompt": "a purple circle", "image": _b64(init), "mask": _b64(mask), "seed": 0,
              "num_images": 4, "strength": 1.0},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    purple = scenes.COLORS["purple"]
    for image in _images(r.json()):
        pixels = np.asarray(image, np.float32)
        far = np.sqrt(((pixels - purple) ** 2).sum(-1)) < 80
        assert far[:32].sum() > 20  # something purple was painted where the mask was
        assert far[40:].sum() == 0  # and nothing well below it
        assert np.abs(pixels[40:] - 255).mean() < 12  # the kept half is still white


def test_the_weights_went_through_the_model_store(painter: ProcessServer, home: Path) -> None:
    from impasto.store import ModelStore

    stored = ModelStore(home).resolve("tiny-painter:latest", verify=True)
    sums = {}
    for line in (DATA / "SHA256SUMS").read_text().splitlines():
        digest, rel = line.split(maxsplit=1)
        sums[rel.removeprefix("pipeline/")] = digest
    assert {rel: e.sha256 for rel, e in stored.manifest.files.items()} == sums
    assert stored.manifest.pipeline_class == "StableDiffusionPipeline"
    body = painter.client.post("/text2img", json={"prompt": "a red circle", "seed": 1}).json()
    assert body["recipe"]["model_version"] == str(stored.ref)


train = example_module("train")


def test_a_short_training_run_lowers_the_loss(tmp_path: Path) -> None:
    """The script itself, in this process (a fresh interpreter would double the time)."""
    out = tmp_path / "pipeline"
    report = train.main(["--out", str(out), "--quick"])
    for stage in ("vae_loss", "unet_loss"):
        losses = [loss for _, loss in report[stage]]
        assert losses[-1] < 0.8 * losses[0], (stage, losses)
    written = json.loads((tmp_path / "training.json").read_text())
    assert written["unet_loss"] == [list(point) for point in report["unet_loss"]]
    assert (out / "model_index.json").is_file()
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    sums = (tmp_path / "SHA256SUMS").read_text().splitlines()
    assert any(line.endswith("pipeline/unet/diffusion_pytorch_model.safetensors") for line in sums)


def test_training_is_deterministic_given_its_seed(tmp_path: Path) -> None:
    tiny = ["--images", "16", "--vae-steps", "2", "--unet-steps", "2", "--seed", "7"]
    for run in ("a", "b"):
        train.main(["--out", str(tmp_path / run / "pipeline"), *tiny])
    sums = [(tmp_path / run / "SHA256SUMS").read_text() for run in ("a", "b")]
    assert sums[0] == sums[1] and "unet/diffusion_pytorch_model.safetensors" in sums[0]
