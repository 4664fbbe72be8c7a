"""``DiffusersModel``: serve a diffusers pipeline from config alone, one route per task.

A package with a ``diffusers:`` section needs no model.py: :func:`model_class_for` builds a
subclass whose endpoints (``text2img``, ``img2img``, ``inpaint``, ``img2vid``) take input
models bounded by that config and hide the tasks the pipeline cannot do. A custom model.py
may subclass :class:`DiffusersModel` (e.g. to fetch weights in ``load()``) and keeps all of it.

Batching contract (``batching.mode: static``): one pipeline call per batch, one generator
per image, results split back per request in order. Every call holds one lock (a pipeline is
not thread-safe), runs under ``torch.inference_mode()`` and reports progress / honours
cancellation per step. With ``batching.mode: continuous`` the image tasks are per-request
``async`` endpoints served by a :class:`~impasto.diffusers.continuous.ContinuousEngine`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Hashable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from ..config import Batching, DiffusersConfig, PackageConfig
from ..context import RequestContext
from ..errors import ConfigError, ImpastoError, InputError, ModelError, NotFound, NotReady
from ..spec import endpoint
from .calls import (
    batch_cost,
    batch_key,
    image_batch,
    native_size,
    pipeline_kwargs,
    random_seed,
    video_kwargs,
)
from .lora import LoraCache
from .pipelines import TASKS, PipelineSet, load_pipelines, resolve_source, supported_tasks
from .progress import StepHook
from .schemas import (
    ImageResult,
    Img2ImgInput,
    Img2VidInput,
    InpaintInput,
    Text2ImgInput,
    VideoResult,
    make_schemas,
)

IMAGE_TASKS = ("text2img", "img2img", "inpaint")
_COST = partial(batch_cost, DiffusersConfig(model="-"))
log = logging.getLogger("impasto.diffusers")


class DiffusersModel:
    """The zero-code diffusers model; subclass it to customise ``load()`` or the recipe."""

    impasto_default_endpoint: ClassVar[str] = "text2img"
    impasto_tasks: ClassVar[tuple[str, ...] | None] = None  # set by model_class_for
    impasto_continuous: ClassVar[bool] = False  # image tasks served by the continuous engine
    impasto_schemas: ClassVar[dict[str, Any]] = {
        "text2img": Text2ImgInput,
        "img2img": Img2ImgInput,
        "inpaint": InpaintInput,
        "img2vid": Img2VidInput,
    }

    def __init__(
        self,
        config: dict[str, Any] | PackageConfig | None = None,
        data_dir: str | Path | None = None,
        secrets: Any = None,
        environment: str | None = None,
    ) -> None:
        if isinstance(config, PackageConfig):
            section: Any = config.diffusers
            batching: Any = config.batching
        else:
            section = (config or {}).get("diffusers")
            batching = (config or {}).get("batching") or {}
        if section is None:
            raise ConfigError("config.yaml has no `diffusers:` section", field="diffusers")
        self.cfg = DiffusersConfig.model_validate(section)
        self.batching = Batching.model_validate(batching)
        self.engine: Any = None  # a ContinuousEngine once loaded in continuous mode
        self._fallback: dict[str, Any] = {}  # task -> BatchQueue, when the engine is not used
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.secrets = secrets
        self.environment = environment
        self.pipes: PipelineSet | None = None
        self.loras: LoraCache | None = None
        self.warmup_seconds: list[float] = []
        self._lock = threading.Lock()
        self._store: Any = None

    # -- loading -----------------------------------------------------------------------------
    @property
    def store(self) -> Any:
        """The model store (``$IMPASTO_HOME``), opened on first use."""
        if self._store is None:
            from ..store import ModelStore

            self._store = ModelStore()
        return self._store

    def load(self) -> None:
        """Load the pipeline once, derive the task pipelines, run the warm-up shapes, then
        (in continuous mode) start the step loop."""
        tasks = list(
            self.impasto_tasks
            or self.cfg.tasks
            or _tasks_from_model(self.cfg, data_dir=self.data_dir, store=self.store)
        )
        self.pipes = load_pipelines(self.cfg, tasks, data_dir=self.data_dir, store=self.store)
        self.loras = LoraCache(
            self.pipes.base,
            self.cfg.lora_cache_size,
            self.resolve_lora,
            allow_pickle=self.cfg.allow_pickle,
        )
        self.warmup()
        self.start_engine()

    def warmup(self) -> None:
        """Run each ``warmup`` shape once so the first real request is not the slow one."""
        assert self.pipes is not None
        from PIL import Image

        for shape in self.cfg.warmup:
            task = shape.task or next(iter(self.pipes.pipes))
            if task not in self.pipes.pipes:
                raise ConfigError(f"warmup task {task!r} is not served", field="diffusers.warmup")
            fields: dict[str, Any] = {"num_inference_steps": shape.steps, "seed": 0}
            fields.update(width=shape.width, height=shape.height)
            if task != "text2img":
                fields["image"] = Image.new("RGB", (shape.width, shape.height), (128, 128, 128))
            if task == "inpaint":
                fields["mask"] = Image.new("L", (shape.width, shape.height), 255)
            if task != "img2vid":
                fields["prompt"] = "warm-up"
            inp = self.impasto_schemas[task].model_construct(**fields)
            started = time.perf_counter()
            if task == "img2vid":
                self.generate_video(inp, RequestContext("warmup"))
            else:
                self.generate_images(task, [inp], [RequestContext("warmup")])
            self.warmup_seconds.append(time.perf_counter() - started)

    def start_engine(self) -> None:
        """In continuous mode, start the step loop (or log why this pipeline cannot use it)."""
        if not type(self).impasto_continuous or self.engine is not None:
            return
        from .continuous import ContinuousEngine, unsupported_reason

        reason = unsupported_reason(self.cfg, self._loaded())
        if reason is not None:
            log.warning("batching.mode continuous is not used: %s; batching is static", reason)
            return
        self.engine = ContinuousEngine(
            self,
            max_batch_size=self.batching.max_batch_size,
            max_batch_pixels=self.batching.max_batch_pixels,
        )

    def engine_stats(self) -> dict[str, Any]:
        """The continuous engine's figures for the metrics (empty without one)."""
        return self.engine.stats() if self.engine is not None else {}

    def unload(self) -> None:
        """Stop the continuous engine's threads, which hold the pipelines (the runner calls
        this before dropping the model, e.g. to load another in its place)."""
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def resolve_lora(self, ref: str) -> tuple[str, Path]:
        """A LoRA ref to ``(identity, path)``: a store ref, or a path inside ``data_dir``.

        Requests never reach arbitrary files: a path must stay inside the package's data dir.
        """
        if self.store.is_ref(ref):
            stored = self.store.resolve(ref)
            return str(stored.ref), Path(stored.path)
        if self.data_dir is not None:
            root = self.data_dir.resolve()
            path = (root / ref).resolve()
            if path.is_relative_to(root) and path.exists():
                return str(path), path
        raise NotFound(
            f"{ref!r} is neither a stored model nor a file in the data dir; "
            "run `impasto models import NAME FOLDER` first"
        )

    def _loaded(self) -> PipelineSet:
        if self.pipes is None:
            raise NotReady("the diffusers pipeline is not loaded; call load() first")
        return self.pipes

    # -- endpoints (model_class_for re-creates these with config-bounded schemas) ----------
    @endpoint(
        name="text2img", batchable=True, batch_key=partial(batch_key, "text2img"), batch_cost=_COST
    )
    def text2img(
        self, inputs: list[Text2ImgInput], contexts: list[RequestContext]
    ) -> list[ImageResult]:
        """Make images from a text prompt."""
        return self.generate_images("text2img", inputs, contexts)

    @endpoint(
        name="img2img", batchable=True, batch_key=partial(batch_key, "img2img"), batch_cost=_COST
    )
    def img2img(
        self, inputs: list[Img2ImgInput], contexts: list[RequestContext]
    ) -> list[ImageResult]:
        """Redraw an input image guided by a prompt."""
        return self.generate_images("img2img", inputs, contexts)

    @endpoint(
        name="inpaint", batchable=True, batch_key=partial(batch_key, "inpaint"), batch_cost=_COST
    )
    def inpaint(
        self, inputs: list[InpaintInput], contexts: list[RequestContext]
    ) -> list[ImageResult]:
        """Repaint the white area of a mask."""
        return self.generate_images("inpaint", inputs, contexts)

    @endpoint(name="img2vid")
    def img2vid(self, input: Img2VidInput, context: RequestContext) -> VideoResult:
        """Animate a still image into a short video."""
        return self.generate_video(input, context)

    # -- the work ------------------------------------------------------------------------------
    def generate_images(
        self, task: str, inputs: Sequence[Any], contexts: Sequence[RequestContext]
    ) -> list[ImageResult]:
        """One pipeline call per group of compatible inputs; one result per input, in order."""
        if len(inputs) != len(contexts):
            raise ModelError(f"{len(inputs)} inputs but {len(contexts)} contexts")
        groups: dict[Hashable, list[int]] = {}
        for i, inp in enumerate(inputs):
            groups.setdefault(batch_key(task, inp), []).append(i)
        results: list[Any] = [None] * len(inputs)
        for idx in groups.values():
            outs = self._run_images(task, [inputs[i] for i in idx], [contexts[i] for i in idx])
            for i, out in zip(idx, outs, strict=True):
                results[i] = out
        return results

    async def submit_image(self, task: str, input: Any, context: RequestContext) -> ImageResult:
        """One image request in continuous mode: the engine, else static batching in a queue
        of this model's own (when the loaded pipeline turned out not to suit the engine)."""
        if self.engine is not None:
            return await self.engine.submit(task, input, context)
        from .continuous import Waiter, static_queue

        if task not in self._fallback:
            self._fallback[task] = static_queue(self, task)
        return await self._fallback[task].submit(input, Waiter(context))

    def _run_images(
        self,
        task: str,
        inputs: list[Any],
        contexts: list[RequestContext],
        call: Any = None,
    ) -> list[ImageResult]:
        """Run one pipeline call for ``inputs`` and build their results; ``call`` replaces
        :meth:`_call` (the continuous engine passes its own, same signature)."""
        pset = self._loaded()
        first = inputs[0]
        width, height = self._size(pset, first)
        batch = image_batch(task, inputs, width, height)
        hook = StepHook(contexts, batch.spans, first.num_inference_steps, self.cfg.preview_every)
        loras = [(lo.ref, lo.scale) for lo in first.loras]
        out, pipe, seconds = (call or self._call)(task, first.scheduler, batch.kwargs, hook, loras)
        timings = {"queue_s": contexts[0].timings.get("queue_s", 0.0), "inference_s": seconds}
        if loras and self.loras is not None:
            timings["lora_load_s"] = self.loras.load_seconds
        results = []
        for inp, seed, (start, n) in zip(inputs, batch.seeds, batch.spans, strict=True):
            recipe = self.recipe(task, pipe, inp, seed, width, height)
            chunk = out.images[start : start + n]
            for k, img in enumerate(chunk):
                img.info["impasto_recipe"] = json.dumps({**recipe, "seed": seed + k})
            results.append(
                ImageResult.model_construct(
                    images=chunk,
                    seeds=[seed + k for k in range(n)],
                    recipe=recipe,
                    timings=dict(timings),
                )
            )
        return results

    def generate_video(self, input: Any, context: RequestContext) -> VideoResult:
        """One image-to-video call (SVD); frames come back as a :class:`impasto.media.Video`."""
        from ..media import Video

        pset = self._loaded()
        pipe = pset.for_task("img2vid")
        width, height = self._size(pset, input)
        seed = input.seed if input.seed is not None else random_seed()
        frames = input.num_frames or int(pipe.unet.config.get("num_frames", 14))
        hook = StepHook([context], [(0, 1)], input.num_inference_steps, self.cfg.preview_every)
        kwargs = video_kwargs(input, width, height, frames, seed)
        out, pipe, seconds = self._call("img2vid", None, kwargs, hook, [])
        recipe = self.recipe("img2vid", pipe, input, seed, width, height)
        recipe.update(num_frames=frames, fps=input.fps, motion_bucket_id=input.motion_bucket_id)
        recipe["noise_aug_strength"] = input.noise_aug_strength
        return VideoResult.model_construct(
            video=Video(list(out.frames[0]), fps=input.fps),
            seed=seed,
            recipe=recipe,
            timings={"queue_s": context.timings.get("queue_s", 0.0), "inference_s": seconds},
        )

    def _call(
        self,
        task: str,
        scheduler: str | None,
        kwargs: dict[str, Any],
        hook: StepHook,
        loras: list[tuple[str, float]],
    ) -> tuple[Any, Any, float]:
        """Run one pipeline call under the lock, with LoRAs applied and always unset after."""
        pset = self._loaded()
        with self._lock:
            hook.raise_if_all_cancelled()  # canceled while waiting for the lock
            pipe = pset.for_task(task, scheduler)
            call = pipeline_kwargs(pipe, kwargs, hook)
            assert self.loras is not None
            with self.loras.applied(loras):
                started = time.perf_counter()
                out = invoke_pipeline(pipe, call)
                return out, pipe, time.perf_counter() - started

    def _size(self, pset: PipelineSet, inp: Any) -> tuple[int, int]:
        """Width and height: the request's, else config defaults, else the model's native."""
        native = native_size(pset.base)
        width = inp.width or self.cfg.default_width or native
        height = inp.height or self.cfg.default_height or native
        limit = self.cfg.limits.max_pixels
        if width * height > limit:
            raise InputError(
                f"width*height = {width * height} exceeds the limit of {limit} pixels",
                field="height",
            )
        return width, height

    def recipe(
        self, task: str, pipe: Any, inp: Any, seed: int, width: int, height: int
    ) -> dict[str, Any]:
        """Everything needed to make the same image again (written into each PNG)."""
        pset = self._loaded()
        recipe: dict[str, Any] = {
            "model": pset.source.ref,
            "model_version": pset.source.resolved,
            "model_digest": pset.source.digest,
            "pipeline": type(pipe).__name__,
            "task": task,
            "scheduler": type(getattr(pipe, "scheduler", None)).__name__,
            "dtype": str(pset.dtype).removeprefix("torch."),
            "prompt": getattr(inp, "prompt", None),
            "negative_prompt": getattr(inp, "negative_prompt", None),
            "seed": seed,
            "steps": inp.num_inference_steps,
            "guidance_scale": inp.guidance_scale,
            "width": width,
            "height": height,
            "strength": getattr(inp, "strength", None),
            "loras": [lo.model_dump() for lo in getattr(inp, "loras", ())] or None,
        }
        return {k: v for k, v in recipe.items() if v is not None}


def invoke_pipeline(pipe: Any, call: dict[str, Any]) -> Any:
    """``pipe(**call)`` under ``torch.inference_mode()``; its own errors are the model's
    (500), never a 422: inputs are checked before the pipeline runs."""
    import torch

    with torch.inference_mode():
        return pipe(**call)


def _task_endpoint(task: str, schema: type, cfg: DiffusersConfig, continuous: bool) -> Any:
    """A fresh endpoint method for ``task`` whose input annotation is ``schema``: batchable
    (static batching), or one request per call awaiting the continuous engine."""
    if task == "img2vid":

        def run_video(self: DiffusersModel, input: Any, context: RequestContext) -> Any:
            return self.generate_video(input, context)

        run_video.__annotations__ = {
            "input": schema,
            "context": RequestContext,
            "return": VideoResult,
        }
        fn: Any = run_video
        opts: dict[str, Any] = {}
    elif continuous:

        async def run_image(self: DiffusersModel, input: Any, context: RequestContext) -> Any:
            return await self.submit_image(task, input, context)

        run_image.__annotations__ = {
            "input": schema,
            "context": RequestContext,
            "return": ImageResult,
        }
        fn = run_image
        opts = {"batches_itself": True}  # the runner lets a batch's worth in at once
    else:

        def run_images(self: DiffusersModel, inputs: Any, contexts: Any) -> Any:
            return self.generate_images(task, inputs, contexts)

        run_images.__annotations__ = {
            "inputs": list[schema],  # type: ignore[valid-type]
            "contexts": list[RequestContext],
            "return": list[ImageResult],
        }
        fn = run_images
        opts = {
            "batchable": True,
            "batch_key": partial(batch_key, task),
            "batch_cost": partial(batch_cost, cfg),
        }
    fn.__name__ = fn.__qualname__ = task
    fn.__doc__ = schema.__doc__
    return endpoint(name=task, **opts)(fn)


def model_class_for(
    config: PackageConfig, base: type[DiffusersModel] | None = None
) -> type[DiffusersModel]:
    """A subclass of ``base`` serving exactly the configured tasks with config-bounded inputs.

    Tasks come from ``diffusers.tasks``, else from the pipeline class named in the store
    manifest or ``model_index.json`` (read without loading weights). The first task is what
    ``/predict`` runs. Task methods the user's subclass overrides are kept as they are.

    With ``batching.mode: continuous`` the image tasks become one-request ``async``
    endpoints served by the continuous engine, unless the pipeline class is one it cannot
    drive (then batching stays static, and the log says why).
    """
    base = base or DiffusersModel
    cfg = config.diffusers
    if cfg is None:
        raise ConfigError("config.yaml has no `diffusers:` section", field="diffusers")
    class_name = _class_name(cfg)
    tasks = list(cfg.tasks or supported_tasks(class_name))
    schemas = make_schemas(cfg)
    continuous = config.batching.enabled and config.batching.mode == "continuous"
    if continuous:
        from .continuous import config_reason

        reason = config_reason(cfg, class_name)
        if reason is not None:
            log.warning("batching.mode continuous is not used: %s; batching is static", reason)
            continuous = False
    namespace: dict[str, Any] = {
        "__module__": base.__module__,
        "__qualname__": base.__qualname__,
        "__doc__": base.__doc__,
        "impasto_tasks": tuple(tasks),
        "impasto_schemas": schemas,
        "impasto_default_endpoint": tasks[0],
        "impasto_continuous": continuous,
    }
    for task in TASKS:
        if task not in tasks:
            namespace[task] = None  # hides the endpoint
        elif getattr(base, task, None) is getattr(DiffusersModel, task):
            namespace[task] = _task_endpoint(task, schemas[task], cfg, continuous)
    return type(base.__name__, (base,), namespace)


def _class_name(cfg: DiffusersConfig, **where: Any) -> str | None:
    """The configured pipeline class, read without loading weights; None when it cannot be
    found yet (e.g. a model.py that fetches its weights in ``load()``)."""
    if cfg.pipeline != "auto":
        return cfg.pipeline
    try:
        source = resolve_source(cfg.model, **where)
    except ImpastoError:
        return None
    return source.class_name()


def _tasks_from_model(cfg: DiffusersConfig, **where: Any) -> list[str]:
    """What the configured pipeline supports (the image tasks when it is not known yet)."""
    name = _class_name(cfg, **where)
    return supported_tasks(name) if name is not None else list(IMAGE_TASKS)
