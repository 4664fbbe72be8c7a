"""Continuous batching against the standard diffusers pipelines, on tiny real SD and SDXL.

Every image the engine makes is compared with the same request run alone through the
plain diffusers pipeline (same seed, same scheduler class): at most 2/255 per pixel.
Joins are driven, not timed: the first request's progress listener starts the second one
and holds the first until the second has asked for its first UNet forward, so the second
joins exactly at the first's next step.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from impasto import logs
from impasto.config import parse_config
from impasto.context import RequestContext
from impasto.diffusers import build_tiny_lora, build_tiny_sd, build_tiny_sdxl, model_class_for
from impasto.diffusers.calls import accepted
from impasto.diffusers.continuous import ContinuousEngine, EngineEvent
from impasto.errors import Canceled, PredictTimeout
from impasto.spec import inspect_model

pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = pytest.mark.timeout(600)

SCHEDULERS = [
    "DDIMScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "PNDMScheduler",
]
TASKS = ["text2img", "img2img", "inpaint"]
SIZE = 32


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("continuous")
    os.environ.setdefault("IMPASTO_HOME", str(root / "home"))
    sd = build_tiny_sd(root / "sd")
    build_tiny_lora(sd, root / "data" / "loras" / "ink", seed=3)
    return {"sd": sd, "sdxl": build_tiny_sdxl(root / "sdxl"), "data": root / "data"}


def make_model(folder: Path, data: Path | None = None, **batching: Any) -> Any:
    config = parse_config(
        {
            "batching": {"mode": "continuous", **batching},
            "diffusers": {
                "model": str(folder),
                "default_width": SIZE,
                "default_height": SIZE,
                "preview_every": 2,
                "schedulers": SCHEDULERS,
                "limits": {"max_side": 128, "max_pixels": 64 * 64},
            },
        }
    )
    model = model_class_for(config)(config=config.model_dump(), data_dir=data)
    model.load()
    return model


@pytest.fixture(scope="module")
def models(folders):
    loaded = {
        "sd": make_model(folders["sd"], folders["data"]),
        "sdxl": make_model(folders["sdxl"]),
    }
    yield loaded
    for model in loaded.values():
        model.unload()


def picture(seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def mask() -> Image.Image:
    m = np.zeros((SIZE, SIZE), dtype=np.uint8)
    m[:, SIZE // 2 :] = 255
    return Image.fromarray(m, "L")


def request(model: Any, task: str, **fields: Any) -> Any:
    fields.setdefault("prompt", "a painting of a cat")
    if task != "text2img":
        fields.setdefault("image", picture(fields.get("seed", 0)))
        fields.setdefault("strength", 0.75)
    if task == "inpaint":
        fields.setdefault("mask", mask())
    return type(model).impasto_schemas[task].model_validate(fields)


def reference(model: Any, task: str, inp: Any) -> np.ndarray:
    """The same request alone through a plain diffusers pipeline, as uint8 pixels."""
    from diffusers import (
        AutoPipelineForImage2Image,
        AutoPipelineForInpainting,
        AutoPipelineForText2Image,
    )

    auto = {
        "text2img": AutoPipelineForText2Image,
        "img2img": AutoPipelineForImage2Image,
        "inpaint": AutoPipelineForInpainting,
    }[task]
    pipe = auto.from_pipe(model.pipes.base)
    pipe.set_progress_bar_config(disable=True)
    original = model.pipes.original_scheduler
    name = inp.scheduler or type(original).__name__
    pipe.scheduler = model.pipes.scheduler(name).__class__.from_config(original.config)
    kwargs = {
        "prompt": inp.prompt,
        "negative_prompt": inp.negative_prompt,
        "num_inference_steps": inp.num_inference_steps,
        "guidance_scale": inp.guidance_scale,
        "width": inp.width or SIZE,
        "height": inp.height or SIZE,
        "image": getattr(inp, "image", None),
        "mask_image": getattr(inp, "mask", None),
        "strength": getattr(inp, "strength", None),
        "generator": torch.Generator("cpu").manual_seed(inp.seed),
        "output_type": "np",
    }
    kwargs = {k: v for k, v in kwargs.items() if v is not None and k in accepted(pipe)}
    with model._lock:  # the engine's modules: never at the same time as a step
        images = pipe(**kwargs).images
    return (images[0] * 255).round().astype(np.int16)


def assert_same(model: Any, task: str, inp: Any, result: Any) -> None:
    got = np.asarray(result.images[0], dtype=np.int16)
    diff = np.abs(got - reference(model, task, inp)).max()
    assert diff <= 2, f"{task}/{inp.scheduler}: max pixel difference {diff}"


class Recorder:
    """The engine's events while a test runs (the engine calls it from its threads)."""

    def __init__(self, engine: ContinuousEngine) -> None:
        self.engine = engine
        self.events: list[EngineEvent] = []
        self.joined: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> Recorder:
        self.engine.observers.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.engine.observers.remove(self)

    def __call__(self, event: EngineEvent) -> None:
        with self._lock:
            self.events.append(event)
            if event.kind == "join":
                self.joined.setdefault(event.request_ids[0], threading.Event()).set()

    def ended(self, request_id: str) -> None:
        with self._lock:
            self.joined.setdefault(request_id, threading.Event()).set()

    def wait_joined(self, request_id: str, timeout: float = 120) -> bool:
        with self._lock:
            flag = self.joined.setdefault(request_id, threading.Event())
        return flag.wait(timeout)

    def steps(self) -> list[tuple[str, ...]]:
        return [e.request_ids for e in self.events if e.kind == "step"]


def join_at(
    engine: ContinuousEngine, first: tuple, later: dict[int, tuple], recorder: Recorder
) -> list[Any]:
    """Run ``first``; after its step ``k`` start ``later[k]`` and let ``first`` go on only
    once that request waits for its first forward (it joins at ``first``'s step ``k + 1``).
    Returns the results in order: ``first``, then ``later`` by step."""
    out: dict[int, Any] = {}
    threads: dict[int, threading.Thread] = {}

    def start(k: int) -> None:
        task, inp, ctx = later[k]

        def run() -> None:
            try:
                out[k] = engine.run(task, inp, ctx)
            except BaseException as exc:
                out[k] = exc
            finally:
                recorder.ended(ctx.request_id)  # the gate must not wait for a failed request

        threads[k] = threading.Thread(target=run)
        threads[k].start()
        assert recorder.wait_joined(ctx.request_id), f"{ctx.request_id} never joined"

    def gate(event: Any) -> None:
        step = event.data.get("step")
        if event.kind == "progress" and step in later and step not in threads:
            start(step)

    first[2].subscribe(gate)
    out[0] = engine.run(*first)
    for thread in threads.values():
        thread.join(120)
    results = [out[0], *(out[k] for k in sorted(later))]
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def join_after(
    engine: ContinuousEngine, first: tuple, second: tuple, k: int, recorder: Recorder
) -> tuple[Any, Any]:
    """``second`` joins ``first`` after its step ``k``; both results."""
    a, b = join_at(engine, first, {k: second}, recorder)
    return a, b


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_requests_joining_at_different_steps_equal_each_run_alone(models, family, scheduler):
    """text2img (CFG) runs; img2img (no CFG, other prompt, seed and step count) joins at its
    second step, inpaint (another guidance scale and step count) at its third; all three
    equal their standalone diffusers runs."""
    model = models[family]
    steps = 4 if scheduler == "PNDMScheduler" else 3  # PNDM's Runge-Kutta start needs 4
    a = request(model, "text2img", seed=11, num_inference_steps=steps + 2, scheduler=scheduler)
    b = request(
        model,
        "img2img",
        seed=12,
        num_inference_steps=steps + 1,
        guidance_scale=1.0,
        prompt="a photo of a red dog",
        scheduler=scheduler,
    )
    c = request(
        model,
        "inpaint",
        seed=13,
        num_inference_steps=steps,
        guidance_scale=3.0,
        scheduler=scheduler,
    )
    ctxs = [RequestContext(name) for name in "abc"]
    with Recorder(model.engine) as rec:
        runs = join_at(
            model.engine,
            ("text2img", a, ctxs[0]),
            {1: ("img2img", b, ctxs[1]), 2: ("inpaint", c, ctxs[2])},
            rec,
        )
    with_a = [ids for ids in rec.steps() if "a" in ids]
    assert with_a[0] == ("a",) and "b" in with_a[1] and "c" not in with_a[1]
    assert {"a", "b", "c"} <= set(with_a[2])  # joined at A's second and third steps
    for task, inp, out in zip(TASKS, (a, b, c), runs, strict=True):
        assert_same(model, task, inp, out)
        assert out.recipe["scheduler"] == scheduler and out.seeds == [inp.seed]


def test_mixed_schedulers_steps_sizes_and_tasks_share_steps(models):
    """Five requests submitted together from the event loop: every scheduler, 2 to 6 steps,
    two sizes, three tasks, CFG on and off; each equals its standalone run."""
    model = models["sd"]
    tasks = ["text2img", "img2img", "inpaint", "text2img", "text2img"]
    inputs = [
        request(
            model,
            task,
            seed=20 + i,
            scheduler=SCHEDULERS[i],
            num_inference_steps=2 + i,
            guidance_scale=1.0 if i % 2 else 6.0,
            **({"width": 48, "height": 48} if i == 4 else {}),
        )
        for i, task in enumerate(tasks)
    ]

    async def together() -> list[Any]:
        ctxs = [RequestContext(f"r{i}") for i in range(len(inputs))]
        jobs = [
            model.engine.submit(t, inp, c) for t, inp, c in zip(tasks, inputs, ctxs, strict=True)
        ]
        return await asyncio.gather(*jobs)

    with Recorder(model.engine) as rec:
        results = asyncio.run(together())
    assert max(len(ids) for ids in rec.steps()) >= 3  # steps were shared
    for task, inp, result in zip(tasks, inputs, results, strict=True):
        assert result.images[0].size == (inp.width, inp.height)
        assert_same(model, task, inp, result)


@pytest.mark.parametrize("how", ["cancel", "deadline"])
def test_canceled_request_leaves_at_its_next_step(models, how):
    model = models["sd"]
    a = request(model, "text2img", seed=30, num_inference_steps=6)
    b = request(model, "text2img", seed=31, num_inference_steps=6)
    ctx_a, ctx_b = RequestContext("a"), RequestContext("b")
    progress_b: list[int] = []

    def stop_b(event: Any) -> None:
        if event.kind == "progress":
            progress_b.append(event.data["step"])
            if event.data["step"] == 2:
                if how == "cancel":
                    ctx_b.cancel("canceled")
                else:
                    ctx_b.deadline = time.monotonic()

    ctx_b.subscribe(stop_b)
    error = Canceled if how == "cancel" else PredictTimeout
    with Recorder(model.engine) as rec, pytest.raises(error):
        # A goes on alone; join_after re-raises B's error once A has finished
        join_after(model.engine, ("text2img", a, ctx_a), ("text2img", b, ctx_b), 1, rec)
    assert progress_b == [1, 2]
    assert sum("b" in ids for ids in rec.steps()) == 2
    leave = next(e for e in rec.events if e.kind == "leave" and e.request_ids == ("b",))
    assert leave.detail == "canceled"
    assert model.engine.stats()["active"] == 0


def test_cancel_while_queued_never_runs(models):
    model = models["sd"]
    engine = ContinuousEngine(model, max_batch_size=1)
    try:
        ctx_a, ctx_b = RequestContext("a"), RequestContext("b")
        a = request(model, "text2img", seed=1, num_inference_steps=3)
        b = request(model, "text2img", seed=2, num_inference_steps=3)
        out: dict[str, Any] = {}

        def run_b() -> None:
            try:
                engine.run("text2img", b, ctx_b)
            except BaseException as exc:
                out["b"] = exc

        thread = threading.Thread(target=run_b)

        def gate(event: Any) -> None:
            if event.kind == "progress" and event.data["step"] == 1:
                thread.start()
                while engine.stats()["queued"] == 0:  # B is queued behind A ...
                    time.sleep(0.001)
                ctx_b.cancel("canceled")  # ... and canceled there
                thread.join(60)

        ctx_a.subscribe(gate)
        with Recorder(engine) as rec:
            engine.run("text2img", a, ctx_a)
        assert isinstance(out["b"], Canceled)
        assert all(ids == ("a",) for ids in rec.steps())
        assert (engine.stats()["active"], engine.stats()["queued"]) == (0, 0)
    finally:
        engine.close()


def test_requests_beyond_the_limits_queue_in_arrival_order(models):
    model = models["sd"]
    engine = ContinuousEngine(model, max_batch_size=2, max_batch_pixels=3 * SIZE * SIZE)
    try:
        inputs = [
            request(model, "text2img", seed=40 + i, num_inference_steps=2 + i % 2, num_images=n)
            for i, n in enumerate([1, 1, 2, 1, 1])
        ]

        async def burst() -> list[Any]:
            ctxs = [RequestContext(f"r{i}") for i in range(len(inputs))]
            return await asyncio.gather(
                *[engine.submit("text2img", inp, c) for inp, c in zip(inputs, ctxs, strict=True)]
            )

        with Recorder(engine) as rec:
            results = asyncio.run(burst())
        admits = [e.request_ids[0] for e in rec.events if e.kind == "admit"]
        assert admits == ["r0", "r1", "r2", "r3", "r4"]  # arrival order, r2 waits for room
        joins = [e.request_ids[0] for e in rec.events if e.kind == "join"]
        assert joins.index("r2") < min(joins.index("r3"), joins.index("r4"))
        # never more than 2 images (or 3 images' pixels) in one step
        images = {f"r{i}": n for i, n in enumerate([1, 1, 2, 1, 1])}
        assert max(sum(images[r] for r in ids) for ids in rec.steps()) == 2
        assert [len(r.images) for r in results] == [1, 1, 2, 1, 1]
        assert results[2].seeds == [42, 43]
        assert_same(model, "text2img", inputs[2], results[2])
        queued = [r.timings["queue_s"] for r in results]
        assert queued[4] > 0 and all(q >= 0 for q in queued)
    finally:
        engine.close()


def test_progress_previews_recipe_and_timings_as_static(models):
    model = models["sd"]
    inp = request(model, "text2img", seed=50, num_inference_steps=4)
    events: list[Any] = []
    ctx = RequestContext("p", sink=events.append)
    result = model.engine.run("text2img", inp, ctx)
    progress = [(e.data["step"], e.data["total"]) for e in events if e.kind == "progress"]
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [e.data["step"] for e in events if e.kind == "preview"] == [2, 4]
    (static,) = model.generate_images("text2img", [inp], [RequestContext()])
    assert result.recipe == static.recipe
    assert np.abs(np.asarray(result.images[0], np.int16) - np.asarray(static.images[0])).max() <= 2
    assert set(result.timings) >= {"queue_s", "inference_s"}


def test_model_logs_are_tagged_with_their_request(models):
    """The pipeline runs in a thread of the engine's own; what it logs (diffusers' warnings,
    prints) still belongs to the request that was current when it was submitted."""
    ctx = RequestContext("tagged")
    seen: list[str | None] = []
    ctx.subscribe(lambda e: e.kind == "progress" and seen.append(logs.current_request_id()))

    async def submit() -> Any:
        with logs.running((ctx,)):
            inp = request(models["sd"], "text2img", seed=55, num_inference_steps=2)
            return await models["sd"].engine.submit("text2img", inp, ctx)

    asyncio.run(submit())
    assert seen == ["tagged", "tagged"]


def test_lora_requests_step_with_their_own_adapters(models):
    """A LoRA request and a plain one run at the same time: each equals the static path."""
    model = models["sd"]
    ink = [{"ref": "loras/ink", "scale": 0.8}]
    lora = request(model, "text2img", seed=60, num_inference_steps=4, loras=ink)
    plain = request(model, "text2img", seed=60, num_inference_steps=4)
    expected = model.generate_images("text2img", [lora, plain], [RequestContext()] * 2)
    ctx_a, ctx_b = RequestContext("lora"), RequestContext("plain")
    with Recorder(model.engine) as rec:
        out_lora, out_plain = join_after(
            model.engine, ("text2img", lora, ctx_a), ("text2img", plain, ctx_b), 1, rec
        )
    for got, want in zip((out_lora, out_plain), expected, strict=True):
        diff = np.abs(np.asarray(got.images[0], np.int16) - np.asarray(want.images[0])).max()
        assert diff <= 2
    assert (
        np.abs(np.asarray(out_lora.images[0], np.int16) - np.asarray(out_plain.images[0])).max()
        > 10
    )  # the adapter changed only its own request's image


def test_continuous_endpoints_are_async_and_per_request(models):
    spec = inspect_model(type(models["sd"]))
    for name in TASKS:
        endpoint = spec.endpoints[name]
        assert endpoint.call.is_async and endpoint.batches_itself and endpoint.batch_call is None
    inp = request(models["sd"], "img2img", seed=70, num_inference_steps=2)
    result = asyncio.run(models["sd"].img2img(inp, RequestContext()))
    assert_same(models["sd"], "img2img", inp, result)


def test_pipelines_the_engine_cannot_drive_fall_back_to_static(folders, caplog):
    caplog.set_level(logging.WARNING, logger="impasto.diffusers")
    config = parse_config(
        {
            "batching": {"mode": "continuous"},
            "diffusers": {"model": "x", "pipeline": "StableVideoDiffusionPipeline"},
        }
    )
    cls = model_class_for(config)
    assert not cls.impasto_continuous
    assert "StableVideoDiffusionPipeline" in caplog.text
    offload = {"model": str(folders["sd"]), "cpu_offload": "model"}
    config = parse_config({"batching": {"mode": "continuous"}, "diffusers": offload})
    assert not model_class_for(config).impasto_continuous
    # a model that learns only in load() that its pipeline cannot run under the engine:
    # its per-request endpoints batch statically, with the same images
    config = parse_config(
        {"batching": {"mode": "continuous"}, "diffusers": {"model": str(folders["sd"])}}
    )
    model = model_class_for(config)(config=config.model_dump())
    model.cfg = model.cfg.model_copy(update={"cpu_offload": "model"})
    model.load()
    assert model.engine is None and caplog.text.count("cpu_offload") == 2
    inp = request(model, "text2img", seed=80, num_inference_steps=2, width=32, height=32)
    result = asyncio.run(model.text2img(inp, RequestContext()))
    assert_same(model, "text2img", inp, result)


def test_static_mode_and_batching_off_keep_batchable_endpoints(folders):
    for batching in ({"mode": "static"}, {"mode": "continuous", "enabled": False}):
        config = parse_config({"batching": batching, "diffusers": {"model": str(folders["sd"])}})
        cls = model_class_for(config)
        assert not cls.impasto_continuous
        assert inspect_model(cls).endpoints["text2img"].batch_call is not None


def test_float16_sdxl_upcasts_its_vae_for_a_shared_decode(folders):
    """SDXL's float16 VAE is upcast around the decode: in preparation (img2img's encode) by
    the pipeline itself, for the batched decode by the loop; both requests finish at the
    same step, are decoded together and equal their standalone runs."""
    config = parse_config(
        {
            "batching": {"mode": "continuous"},
            "diffusers": {"model": str(folders["sdxl"]), "dtype": "float16", "device": "cpu"},
        }
    )
    model = model_class_for(config)(config=config.model_dump())
    model.load()
    try:
        vae = model.pipes.base.vae
        assert vae.dtype == torch.float16 and vae.config.force_upcast
        a = request(model, "text2img", seed=90, num_inference_steps=3, width=32, height=32)
        b = request(model, "img2img", seed=91, num_inference_steps=3, strength=0.75)
        ctx_a, ctx_b = RequestContext("a"), RequestContext("b")
        with Recorder(model.engine) as rec:
            out_a, out_b = join_after(
                model.engine, ("text2img", a, ctx_a), ("img2img", b, ctx_b), 1, rec
            )
        assert [e.request_ids for e in rec.events if e.kind == "decode"] == [("a", "b")]
        assert vae.dtype == torch.float16  # back after the decode
        assert_same(model, "text2img", a, out_a)
        assert_same(model, "img2img", b, out_b)
    finally:
        model.unload()
