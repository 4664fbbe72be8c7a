"""Load a diffusers pipeline once and derive one pipeline per task from it.

The weights are loaded a single time; img2img and inpaint pipelines are made with
``AutoPipeline*.from_pipe`` and share every module with the base, so serving three tasks
costs the memory of one. torch and diffusers are imported inside functions so that
``import impasto.diffusers`` stays cheap for the CLI and the server.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import DiffusersConfig
from ..errors import ConfigError, InputError, NotFound

TASKS = ("text2img", "img2img", "inpaint", "img2vid")

DEFAULT_SCHEDULERS = (
    "DDIMScheduler",
    "DDPMScheduler",
    "DEISMultistepScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "EulerAncestralDiscreteScheduler",
    "EulerDiscreteScheduler",
    "HeunDiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "KDPM2DiscreteScheduler",
    "LMSDiscreteScheduler",
    "PNDMScheduler",
    "UniPCMultistepScheduler",
)
"""Schedulers a request may pick when ``diffusers.schedulers`` is not set."""

_LOGGERS = ("huggingface_hub", "accelerate", "peft")

log = logging.getLogger("impasto.diffusers")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence diffusers/transformers progress bars, info logs and warnings for a block.

    A server's logs should show requests, not "Loading pipeline components" bars. The
    libraries configure their own loggers on import, so their verbosity API is used.
    """
    libs = _library_logging()
    saved = [(mod, mod.get_verbosity(), mod.is_progress_bar_enabled()) for mod in libs]
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for mod in libs:
            mod.set_verbosity_error()
            mod.disable_progress_bar()
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)
            for mod, verbosity, bars in saved:
                mod.set_verbosity(verbosity)
                if bars:
                    mod.enable_progress_bar()


def _library_logging() -> list[Any]:
    mods = []
    for name in ("diffusers.utils.logging", "transformers.utils.logging"):
        try:
            mods.append(importlib.import_module(name))
        except ImportError:
            continue
    return mods


def scheduler_name(name: str) -> str:
    """``"euler"``-style shorthand is not guessed; only the ``Scheduler`` suffix is optional."""
    return name if name.endswith("Scheduler") else f"{name}Scheduler"


def allowed_schedulers(cfg: DiffusersConfig) -> list[str]:
    """What a request may ask for: ``schedulers`` from config, else the common ones."""
    names = [scheduler_name(n) for n in (cfg.schedulers or DEFAULT_SCHEDULERS)]
    if cfg.scheduler and scheduler_name(cfg.scheduler) not in names:
        names.append(scheduler_name(cfg.scheduler))
    return names


# -- where the weights come from -------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    """Where a pipeline's weights are: a folder (store or local path) or a hub id."""

    ref: str
    location: str
    local: bool
    manifest: dict[str, Any] = field(default_factory=dict)
    resolved: str | None = None  # the concrete store version, e.g. ``sd21:20250101-120000-ab12``

    @property
    def digest(self) -> str | None:
        """The store manifest's hash (or one computed from the manifest), for recipes."""
        if not self.manifest:
            return None
        if self.manifest.get("manifest_hash"):
            return str(self.manifest["manifest_hash"])
        blob = json.dumps(self.manifest, sort_keys=True, default=str).encode()
        return "sha256:" + hashlib.sha256(blob).hexdigest()

    def class_name(self) -> str | None:
        """The pipeline class recorded in the manifest or ``model_index.json``, without loading."""
        if self.manifest.get("pipeline_class"):
            return str(self.manifest["pipeline_class"])
        index = Path(self.location) / "model_index.json" if self.local else None
        if index is None:
            index = _hub_model_index(self.location)
        if index is None or not index.exists():
            return None
        try:
            return json.loads(index.read_text()).get("_class_name")
        except (OSError, ValueError):
            return None


def _hub_model_index(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id, "model_index.json"))
    except Exception:  # offline, unknown repo, no huggingface_hub: callers fall back
        return None


def resolve_source(
    model: str, *, data_dir: str | Path | None = None, store: Any = None
) -> ModelSource:
    """Find ``model``: a store ref (``name:version``), an existing folder (absolute, or
    relative to cwd or ``data_dir``), a bare stored name, else a hub id."""
    from ..store import ModelStore

    store = store or ModelStore()
    if ":" in model and store.is_ref(model):
        return _stored(store, model)
    candidates = [Path(model).expanduser()]
    if data_dir is not None and not Path(model).is_absolute():
        candidates.append(Path(data_dir) / model)
    for path in candidates:
        if path.is_dir():
            return ModelSource(model, str(path.resolve()), True)
    if store.is_ref(model):
        return _stored(store, model)
    if model.startswith((".", "/", "~")):
        raise NotFound(f"model folder {model!r} does not exist")
    return ModelSource(model, model, False)


def _stored(store: Any, ref: str) -> ModelSource:
    stored = store.resolve(ref)
    manifest = stored.manifest
    data = manifest.to_dict() if hasattr(manifest, "to_dict") else dict(manifest or {})
    return ModelSource(ref, str(stored.path), True, data, str(stored.ref))


# -- tasks a pipeline class supports -----------------------------------------------------------


def supported_tasks(class_name: str | None) -> list[str]:
    """Tasks one set of weights can serve, judged by its pipeline class name alone."""
    if not class_name:
        return ["text2img", "img2img", "inpaint"]
    if "VideoDiffusion" in class_name or "Img2Vid" in class_name or "ImageToVideo" in class_name:
        return ["img2vid"]
    if "Inpaint" in class_name:
        return ["inpaint"]  # a 9-channel inpaint UNet cannot do text2img
    if "Img2Img" in class_name:
        return ["img2img"]
    tasks = ["text2img"]
    try:
        with quiet():
            from diffusers.pipelines import auto_pipeline as auto
    except ImportError:
        return [*tasks, "img2img", "inpaint"]
    for task, mapping in (
        ("img2img", auto.AUTO_IMAGE2IMAGE_PIPELINES_MAPPING),
        ("inpaint", auto.AUTO_INPAINT_PIPELINES_MAPPING),
    ):
        families = [
            k for k, c in auto.AUTO_TEXT2IMAGE_PIPELINES_MAPPING.items() if c.__name__ == class_name
        ]
        if any(f in mapping for f in families):
            tasks.append(task)
    return tasks


# -- device and dtype --------------------------------------------------------------------------


def pick_device(preference: str = "auto") -> str:
    """``auto``: cuda, then mps, then cpu."""
    import torch

    if preference != "auto":
        return preference
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(preference: str, device: str) -> Any:
    """``auto``: half precision on an accelerator, float32 on CPU (fp16 on CPU is slow or broken)."""
    import torch

    if preference == "auto":
        return torch.float32 if device.startswith("cpu") else torch.float16
    return getattr(torch, preference)


# -- the loaded set ----------------------------------------------------------------------------


@dataclass
class PipelineSet:
    """The base pipeline, one derived pipeline per task, and the scheduler each call uses."""

    base: Any
    pipes: dict[str, Any]
    source: ModelSource
    device: str
    dtype: Any
    default_scheduler: str
    allowed: list[str]
    original_scheduler: Any = field(repr=False)
    _schedulers: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def class_name(self) -> str:
        return type(self.base).__name__

    def for_task(self, task: str, scheduler: str | None = None) -> Any:
        """The pipeline for ``task`` with ``scheduler`` (or the default) installed."""
        if task not in self.pipes:
            served = ", ".join(self.pipes)
            raise NotFound(f"task {task!r} is not served by this model (it serves {served})")
        pipe = self.pipes[task]
        if hasattr(pipe, "scheduler") and task != "img2vid":
            pipe.scheduler = self.scheduler(scheduler or self.default_scheduler)
        return pipe

    def scheduler(self, name: str) -> Any:
        """A scheduler instance by class name, made once from the model's own config."""
        name = scheduler_name(name)
        if name not in self._schedulers:
            if name not in self.allowed:
                raise InputError(f"scheduler {name!r} is not allowed here", field="scheduler")
            original = self.original_scheduler
            compatible = {c.__name__: c for c in original.compatibles}
            compatible[type(original).__name__] = type(original)
            if name not in compatible:
                usable = sorted(set(compatible) & set(self.allowed)) or sorted(compatible)
                raise InputError(
                    f"scheduler {name!r} does not work with {self.class_name}; "
                    f"use one of {', '.join(usable)}",
                    field="scheduler",
                )
            if name == type(original).__name__:
                self._schedulers[name] = original
            else:
                self._schedulers[name] = compatible[name].from_config(original.config)
        return self._schedulers[name]


def offline_reason() -> str | None:
    from ..store.hub import offline_reason as reason

    return reason()


def load_pipelines(
    cfg: DiffusersConfig,
    tasks: list[str],
    *,
    data_dir: str | Path | None = None,
    store: Any = None,
) -> PipelineSet:
    """Load ``cfg.model`` once, apply the memory/speed options, derive a pipeline per task."""
    import torch

    source = resolve_source(cfg.model, data_dir=data_dir, store=store)
    device = pick_device(cfg.device)
    dtype = pick_dtype(cfg.dtype, device)
    with quiet():
        import diffusers

        if cfg.pipeline == "auto":
            cls = diffusers.DiffusionPipeline
        else:
            cls = getattr(diffusers, cfg.pipeline, None)
            if cls is None:
                raise ConfigError(
                    f"diffusers.pipeline: diffusers has no class {cfg.pipeline!r}",
                    field="diffusers.pipeline",
                )
        offline = None if source.local else offline_reason()
        log.info("loading %s (%s, %s)", source.ref, str(dtype).removeprefix("torch."), device)
        try:
            base = cls.from_pretrained(
                source.location,
                torch_dtype=dtype,
                variant=cfg.variant,
                use_safetensors=None if cfg.allow_pickle else True,
                local_files_only=source.local or offline is not None,
            )
        except (OSError, ValueError) as exc:
            if offline is not None:  # not cached, and no way to fetch it: say what to do
                raise ConfigError(
                    f"diffusers.model {cfg.model!r} is neither in the model store nor cached, "
                    f"and the hub is unreachable ({offline}): run `impasto models import "
                    f"NAME {cfg.model}` on a connected machine and bring the store over, or "
                    "point diffusers.model at a folder",
                    field="diffusers.model",
                ) from None
            hint = (
                "" if cfg.allow_pickle else " (only safetensors weights load unless allow_pickle)"
            )
            reason = " ".join(str(exc).split())[:500]
            raise ConfigError(
                f"cannot load {cfg.model!r}: {reason}{hint}", field="diffusers.model"
            ) from None
        for module in base.components.values():
            if isinstance(module, torch.nn.Module):
                module.eval()
        if cfg.attention_slicing:
            base.enable_attention_slicing()
        if cfg.vae_tiling and hasattr(getattr(base, "vae", None), "enable_tiling"):
            base.vae.enable_tiling()
        if cfg.compile:  # in place: the module keeps its class, so LoRA and from_pipe work
            for name in ("unet", "transformer"):
                if isinstance(getattr(base, name, None), torch.nn.Module):
                    getattr(base, name).compile()
        pipes = _derive(base, tasks, dtype)
        if cfg.cpu_offload and device != "cpu":
            if cfg.cpu_offload == "sequential":
                base.enable_sequential_cpu_offload(device=device)
            else:
                base.enable_model_cpu_offload(device=device)
        else:
            base.to(device)
    default = scheduler_name(cfg.scheduler or type(base.scheduler).__name__)
    allowed = allowed_schedulers(cfg)
    if default not in allowed:
        allowed.append(default)
    pset = PipelineSet(base, pipes, source, device, dtype, default, allowed, base.scheduler)
    if "img2vid" not in tasks:
        try:
            pset.scheduler(default)  # fail at load, not on the first request
        except InputError as exc:
            raise ConfigError(f"diffusers.scheduler: {exc.message}", field="diffusers.scheduler")
    return pset


def _derive(base: Any, tasks: list[str], dtype: Any) -> dict[str, Any]:
    """One pipeline per task, sharing the base's modules (``from_pipe`` copies nothing)."""
    from diffusers import (
        AutoPipelineForImage2Image,
        AutoPipelineForInpainting,
        AutoPipelineForText2Image,
    )

    auto = {
        "text2img": AutoPipelineForText2Image,
        "img2img": AutoPipelineForImage2Image,
        "inpaint": AutoPipelineForInpainting,
    }
    pipes: dict[str, Any] = {}
    own = supported_tasks(type(base).__name__)
    for task in tasks:
        if task not in own:
            raise ConfigError(
                f"{type(base).__name__} cannot serve {task}; it supports {', '.join(own)}",
                field="diffusers.tasks",
            )
        if task == own[0]:
            pipe = base  # the base's own task
        else:
            try:
                pipe = auto[task].from_pipe(base)
            except (ValueError, KeyError) as exc:
                raise ConfigError(
                    f"{type(base).__name__} cannot serve {task}: {exc}", field="diffusers.tasks"
                )
        pipe.set_progress_bar_config(disable=True)
        pipes[task] = pipe
    return pipes
