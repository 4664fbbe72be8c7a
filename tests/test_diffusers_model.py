"""DiffusersModel in-process, through real tiny pipelines on CPU (no mocks of torch/diffusers).

The tiny weights are random, so images are noise: the tests check shapes, seeds,
determinism, batching equivalence, cancellation, LoRA isolation and schema bounds.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from impasto.config import parse_config
from impasto.context import RequestContext
from impasto.diffusers import (
    DiffusersModel,
    build_tiny_lora,
    build_tiny_sd,
    build_tiny_svd,
    model_class_for,
)
from impasto.errors import Canceled, InputError
from impasto.spec import inspect_model
from impasto.store import ModelStore

pytest.importorskip("diffusers")
pytest.importorskip("torch")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SD_CONFIG = {
    "model": "tiny-sd:latest",
    "default_steps": 2,
    "default_width": 32,
    "default_height": 32,
    "lora_cache_size": 1,
    "warmup": [{"width": 32, "height": 32, "steps": 1}],
    "limits": {"max_side": 128, "max_pixels": 64 * 64, "max_images": 4, "max_steps": 30},
}


@pytest.fixture(scope="session")
def tiny_home(tmp_path_factory: pytest.TempPathFactory):
    """A model store holding tiny SD, SVD and two LoRAs; IMPASTO_HOME points at it."""
    root = tmp_path_factory.mktemp("diffusers")
    old = os.environ.get("IMPASTO_HOME")
    os.environ["IMPASTO_HOME"] = str(root / "home")
    store = ModelStore()
    sd = build_tiny_sd(root / "build" / "sd")
    store.import_folder("tiny-sd", sd)
    store.import_folder("tiny-svd", build_tiny_svd(root / "build" / "svd"))
    store.import_folder("tiny-lora", build_tiny_lora(sd, root / "build" / "lora", seed=0))
    data = root / "data"
    build_tiny_lora(sd, data / "loras" / "other", seed=1)
    yield data
    if old is None:
        os.environ.pop("IMPASTO_HOME", None)
    else:
        os.environ["IMPASTO_HOME"] = old


def make_model(section: dict, data_dir: Path | None = None) -> DiffusersModel:
    config = parse_config({"diffusers": section})
    cls = model_class_for(config)
    model = cls(config=config.model_dump(), data_dir=data_dir, secrets={}, environment=None)
    model.load()
    return model


@pytest.fixture(scope="session")
def sd(tiny_home: Path) -> DiffusersModel:
    return make_model(SD_CONFIG, data_dir=tiny_home)


@pytest.fixture(scope="session")
def svd(tiny_home: Path) -> DiffusersModel:
    return make_model({"model": "tiny-svd:latest", "default_steps": 2})


def validate(model: DiffusersModel, task: str, **fields):
    return type(model).impasto_schemas[task].model_validate(fields)


def run(model: DiffusersModel, task: str = "text2img", ctx: RequestContext | None = None, **kw):
    kw.setdefault("prompt", "a painting of a cat")
    (out,) = getattr(model, task)([validate(model, task, **kw)], [ctx or RequestContext()])
    return out


def pixels(result) -> np.ndarray:
    return np.stack([np.asarray(img, dtype=np.int16) for img in result.images])


def gray(size=(32, 32)) -> Image.Image:
    return Image.new("RGB", size, (120, 90, 60))


def test_model_class_serves_the_tasks_the_pipeline_supports(sd, svd):
    spec = inspect_model(type(sd))
    assert set(spec.endpoints) == {"text2img", "img2img", "inpaint"}
    assert spec.default_endpoint.name == "text2img"
    assert all(ep.batch_call and ep.batch_key and ep.batch_cost for ep in spec.endpoints.values())
    assert spec.endpoints["img2img"].input_model is type(sd).impasto_schemas["img2img"]
    video = inspect_model(type(svd))
    assert set(video.endpoints) == {"img2vid"}
    assert video.default_endpoint.name == "img2vid"
    assert type(svd).img2vid is not None and type(svd).text2img is None


def test_configured_tasks_hide_the_others(tiny_home):
    config = parse_config({"diffusers": {**SD_CONFIG, "tasks": ["inpaint", "text2img"]}})
    spec = inspect_model(model_class_for(config))
    assert set(spec.endpoints) == {"inpaint", "text2img"}
    assert spec.default_endpoint.name == "inpaint"


def test_warmup_ran_at_load(sd):
    assert len(sd.warmup_seconds) == 1


def test_text2img_sizes_seeds_and_recipe(sd):
    out = run(sd, width=48, height=32, seed=7, num_images=2)
    assert [img.size for img in out.images] == [(48, 32), (48, 32)]
    assert out.seeds == [7, 8]
    recipe = out.recipe
    assert recipe["model"] == "tiny-sd:latest"
    assert recipe["model_version"].startswith("tiny-sd:") and recipe["model_digest"]
    assert recipe["pipeline"] == "StableDiffusionPipeline"
    assert (recipe["scheduler"], recipe["steps"], recipe["seed"]) == ("DDIMScheduler", 2, 7)
    assert (recipe["width"], recipe["height"]) == (48, 32)
    assert json.loads(out.images[1].info["impasto_recipe"])["seed"] == 8
    assert out.timings["inference_s"] > 0
    assert run(sd).images[0].size == (32, 32)  # config defaults


def test_same_seed_same_image_and_random_seed_is_reported(sd):
    a, b = run(sd, seed=3), run(sd, seed=3)
    np.testing.assert_array_equal(pixels(a), pixels(b))
    assert np.abs(pixels(a) - pixels(run(sd, seed=4))).max() > 0
    drawn = run(sd)
    again = run(sd, seed=drawn.seeds[0])
    np.testing.assert_array_equal(pixels(drawn), pixels(again))
    # image i of a request is the same as a request for seed+i alone
    two = run(sd, seed=10, num_images=2)
    np.testing.assert_allclose(pixels(two)[1], pixels(run(sd, seed=11))[0], atol=2)


def test_batched_call_equals_each_request_alone(sd):
    requests = [
        {"prompt": "a red cat", "seed": 1},
        {"prompt": "a blue dog", "seed": 2, "num_images": 2},
        {"prompt": "the squirrel", "seed": 3, "negative_prompt": "blurry"},
        {"prompt": "a photo", "seed": 4, "width": 48},  # another size: its own group
    ]
    inputs = [validate(sd, "text2img", **r) for r in requests]
    events: list = []
    ctxs = [RequestContext(sink=events.append) for _ in inputs]
    batched = sd.text2img(inputs, ctxs)
    assert len(batched) == len(inputs)
    for req, out in zip(requests, batched, strict=True):
        alone = run(sd, **req)
        assert out.seeds == alone.seeds
        np.testing.assert_allclose(pixels(out), pixels(alone), atol=2)
    assert {e.data["total"] for e in events if e.kind == "progress"} == {2}
    assert len([e for e in events if e.kind == "progress"]) == 2 * len(inputs)


def test_img2img_and_inpaint_end_to_end(sd):
    out = run(sd, "img2img", image=gray((64, 48)), strength=0.5, seed=1)
    assert out.images[0].size == (64, 48)  # the input image's size
    assert out.recipe["strength"] == 0.5
    assert out.recipe["pipeline"] == "StableDiffusionImg2ImgPipeline"
    same = run(sd, "img2img", image=gray((64, 48)), strength=0.5, seed=1)
    np.testing.assert_array_equal(pixels(out), pixels(same))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    painted = run(sd, "inpaint", image=gray(), mask=mask, seed=1, num_images=2)
    assert [img.size for img in painted.images] == [(32, 32)] * 2
    assert painted.recipe["pipeline"] == "StableDiffusionInpaintPipeline"
    # the text2img pipeline is unaffected by the derived ones
    np.testing.assert_array_equal(pixels(run(sd, seed=3)), pixels(run(sd, seed=3)))


def test_scheduler_per_request_does_not_stick(sd):
    base = run(sd, seed=2)
    euler = run(sd, seed=2, scheduler="EulerDiscrete")
    assert euler.recipe["scheduler"] == "EulerDiscreteScheduler"
    assert np.abs(pixels(base) - pixels(euler)).max() > 0
    after = run(sd, seed=2)
    assert after.recipe["scheduler"] == "DDIMScheduler"
    np.testing.assert_array_equal(pixels(base), pixels(after))


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"prompt": "x" * 2001}, "prompt"),
        ({"width": 36}, "width"),
        ({"width": 136}, "width"),
        ({"width": 128, "height": 128}, "height"),
        ({"num_images": 5}, "num_images"),
        ({"num_inference_steps": 31}, "num_inference_steps"),
        ({"scheduler": "NoSuchScheduler"}, "scheduler"),
        ({"seed": -1}, "seed"),
        ({"guidance_scale": 31}, "guidance_scale"),
        ({"output_format": "gif"}, "output_format"),
        ({"quality": 101}, "quality"),
        ({"loras": [{"ref": "a"}] * 5}, "loras"),
        ({"steps": 3}, "steps"),
    ],
)
def test_schema_bounds_name_the_field(sd, fields, field):
    with pytest.raises(ValidationError) as err:
        validate(sd, "text2img", **{"prompt": "a cat", **fields})
    assert err.value.errors()[0]["loc"][0] == field


def test_image_task_bounds(sd, svd):
    with pytest.raises(ValidationError) as err:
        validate(sd, "img2img", prompt="a", image=gray(), strength=0)
    assert err.value.errors()[0]["loc"] == ("strength",)
    big = validate(sd, "img2img", prompt="a", image=gray((1000, 500)))
    assert (big.width, big.height) == (88, 40)  # fitted to max_pixels, multiples of 8
    with pytest.raises(ValidationError) as err:
        validate(svd, "img2vid", image=gray(), num_frames=51)
    assert err.value.errors()[0]["loc"] == ("num_frames",)


def test_cancel_from_another_thread_stops_within_a_step(sd):
    reference = run(sd, seed=5)
    reached_two = threading.Event()
    events: list = []

    def sink(event):
        events.append(event)
        if event.kind == "progress" and event.data["step"] == 2:
            reached_two.set()

    ctx = RequestContext(sink=sink)
    canceller = threading.Thread(target=lambda: reached_two.wait(30) and ctx.cancel("gone"))
    canceller.start()
    with pytest.raises(Canceled):
        run(sd, ctx=ctx, seed=5, num_inference_steps=20)
    canceller.join()
    assert 2 <= len([e for e in events if e.kind == "progress"]) < 20
    np.testing.assert_array_equal(pixels(run(sd, seed=5)), pixels(reference))


def test_deadline_stops_generation_within_a_step(sd):
    import time

    from impasto.errors import PredictTimeout

    events: list = []
    ctx = RequestContext(sink=events.append, deadline=time.monotonic() + 0.3)
    with pytest.raises(PredictTimeout):
        run(sd, ctx=ctx, seed=5, num_inference_steps=30, width=64, height=64)
    assert len([e for e in events if e.kind == "progress"]) < 30


def test_cancelled_before_start_runs_nothing(sd):
    events: list = []
    ctx = RequestContext(sink=events.append)
    ctx.cancel()
    with pytest.raises(Canceled):
        run(sd, ctx=ctx)
    assert events == []


def test_one_live_request_keeps_a_batch_running(sd):
    gone = RequestContext()
    gone.cancel()
    inputs = [validate(sd, "text2img", prompt="a", seed=s) for s in (1, 2)]
    out = sd.text2img(inputs, [gone, RequestContext()])
    assert len(out) == 2 and out[1].seeds == [2]


def test_previews_every_n_steps(sd):
    sd.cfg.preview_every = 1
    try:
        events: list = []
        run(sd, ctx=RequestContext(sink=events.append), seed=1)
    finally:
        sd.cfg.preview_every = 0
    previews = [e for e in events if e.kind == "preview"]
    assert [e.data["step"] for e in previews] == [1, 2]
    assert isinstance(previews[0].data["image"], Image.Image)


def test_lora_applies_to_one_request_only(sd):
    plain = run(sd, seed=9)
    styled = run(sd, seed=9, loras=[{"ref": "tiny-lora:latest", "scale": 1.0}])
    assert np.abs(pixels(styled) - pixels(plain)).max() > 10
    assert styled.recipe["loras"] == [{"ref": "tiny-lora:latest", "scale": 1.0}]
    np.testing.assert_array_equal(pixels(run(sd, seed=9)), pixels(plain))  # no leak
    again = run(sd, seed=9, loras=[{"ref": "tiny-lora:latest", "scale": 1.0}])  # cached
    np.testing.assert_allclose(pixels(again), pixels(styled), atol=2)
    # a folder inside the data dir works too; the cache keeps one adapter (lora_cache_size)
    other = run(sd, seed=9, loras=[{"ref": "loras/other", "scale": 0.5}])
    assert np.abs(pixels(other) - pixels(styled)).max() > 0
    assert len(sd.loras.loaded) == 1 and sd.loras.loaded[0].endswith("other")
    file = run(sd, seed=9, loras=[{"ref": "loras/other/pytorch_lora_weights.safetensors"}])
    assert np.abs(pixels(file) - pixels(plain)).max() > 0
    np.testing.assert_array_equal(pixels(run(sd, seed=9)), pixels(plain))


def test_unknown_or_outside_lora_is_an_input_error(sd):
    for ref in ("nope:latest", "../../etc", "/etc"):
        with pytest.raises(InputError) as err:
            run(sd, loras=[{"ref": ref}])
        assert err.value.field == "loras.0.ref"


def test_img2vid_returns_a_video(svd):
    from impasto.media import Video

    events: list = []
    inp = validate(svd, "img2vid", image=gray((64, 64)), seed=3, num_frames=4, fps=5)
    out = svd.img2vid(inp, RequestContext(sink=events.append))
    assert isinstance(out.video, Video)
    assert len(out.video.frames) == 4 and out.video.fps == 5
    assert out.video.size == (64, 64)
    assert out.seed == 3
    assert out.recipe["pipeline"] == "StableVideoDiffusionPipeline"
    assert out.recipe["num_frames"] == 4
    assert [e.data["step"] for e in events if e.kind == "progress"] == [1, 2]


def test_sdxl_from_a_folder_serves_text2img_and_img2img(tiny_home, tmp_path):
    from impasto.diffusers import build_tiny_sdxl

    folder = build_tiny_sdxl(tmp_path / "sdxl")
    xl = make_model({"model": str(folder), "default_steps": 1, "tasks": ["text2img", "img2img"]})
    out = run(xl, width=32, height=32, seed=1, negative_prompt="dull")
    assert out.images[0].size == (32, 32)
    assert out.recipe["pipeline"] == "StableDiffusionXLPipeline"
    assert out.recipe["model"] == str(folder) and "model_digest" not in out.recipe
    again = run(xl, "img2img", image=gray(), seed=1, strength=1.0)
    assert again.recipe["pipeline"] == "StableDiffusionXLImg2ImgPipeline"


@pytest.mark.parametrize("example", ["tiny-sd", "tiny-svd"])
def test_example_packages_build_their_weights_and_serve(tiny_home, tmp_path, monkeypatch, example):
    from impasto.package import load_package

    monkeypatch.setenv("IMPASTO_HOME", str(tmp_path / "empty-home"))
    package = load_package(Path(__file__).parent.parent / "examples" / example)
    model = package.factory()()
    model.load()  # builds the tiny weights into the empty store, then loads and warms up
    assert ModelStore().resolve(f"{example}:latest").manifest.pipeline_class
    name = package.spec.default_endpoint.name
    (ex, *_) = package.examples()
    inp = type(model).impasto_schemas[name].model_validate(ex.input)
    if name == "img2vid":
        out = model.img2vid(inp, RequestContext())
        assert len(out.video.frames) == ex.input["num_frames"]
    else:
        (out,) = getattr(model, name)([inp], [RequestContext()])
        assert len(out.images) == ex.input.get("num_images", 1)


def test_a_value_error_inside_the_pipeline_is_the_models_not_an_input_error(sd):
    # width 65 passes no impasto check (built without validation), so the pipeline's own
    # check raises: that is a fault of the model code (a 500), never a 422
    inp = (
        type(sd)
        .impasto_schemas["text2img"]
        .model_construct(
            **{**validate(sd, "text2img", prompt="x", seed=1).model_dump(), "width": 65}
        )
    )
    with pytest.raises(ValueError) as err:
        sd.text2img([inp], [RequestContext()])
    assert not isinstance(err.value, InputError)
    assert "divisible by 8" in str(err.value)


def test_strength_that_leaves_no_step_is_a_422_on_strength(sd):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        validate(sd, "img2img", prompt="x", image=gray(), num_inference_steps=4, strength=0.1)
    assert err.value.errors()[0]["loc"] == ("strength",)
    assert "leaves no denoising step" in str(err.value)


@pytest.mark.parametrize(
    "field, values", [("guidance_scale", (7.5, 3.0)), ("num_inference_steps", (4, 6))]
)
def test_the_batch_key_separates_requests_that_differ_in(sd, field, values):
    from impasto.diffusers.calls import batch_key

    a, b = (validate(sd, "text2img", prompt="x", **{field: v}) for v in values)
    same = validate(sd, "text2img", prompt="y", **{field: values[0]})
    assert batch_key("text2img", a) != batch_key("text2img", b)
    assert batch_key("text2img", a) == batch_key("text2img", same)
