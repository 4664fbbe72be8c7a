"""One request inside continuous batching: its pipeline copy, its proxies and its calls.

Each request runs diffusers' own ``__call__`` of its task pipeline, in its own thread, on a
shallow copy of the pipeline that has its own scheduler instance. Two attributes of that copy
differ: ``unet`` and ``vae`` are proxies. Calling the UNet (or ``vae.decode``) hands the call
to the step loop and blocks until the loop has run it, batched with the calls of every other
active request at the same step, and handed back this request's slice. Prompt encoding,
latent preparation, classifier-free guidance, the scheduler step, SDXL's added embeddings,
img2img strength and inpaint blending therefore all stay diffusers' own code: a request's
output equals the same request run alone, up to the float rounding of a larger batch.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..context import RequestContext

# A member's phase, as the step loop sees it.
PREP = "prep"  # encoding its prompt and preparing latents (holds the model lock)
WAITING = "waiting"  # a UNet or decode call is waiting for the next step
RUNNING = "running"  # the loop is running its call
BUSY = "busy"  # between calls: guidance and the scheduler step (the next step waits for it)
DONE = "done"  # decoded; only post-processing is left

_UNET_BATCHED = frozenset(
    ("sample", "timestep", "encoder_hidden_states", "timestep_cond", "added_cond_kwargs")
)


@dataclass(eq=False)
class Call:
    """One UNet forward or VAE decode a request asked for, waiting for the loop."""

    member: Member
    kind: str  # "unet" or "decode"
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    key: Hashable  # calls with equal keys share one batched forward
    rows: int  # batch rows this call contributes
    parts: dict[str, Any] = field(default_factory=dict)  # normalised tensors to batch
    return_dict: bool = True
    result: Any = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


@dataclass(eq=False)
class Member:
    """An admitted request: what it costs, which adapters it needs, where it is."""

    ctx: RequestContext
    cost: tuple[int, int]  # (images, pixels) counted against the active-set limits
    loras: tuple[tuple[str, float], ...]
    submit: Callable[[Call], Any]  # hands a call to the loop and blocks for its result
    lock: Any  # the model lock, held while preparing
    phase: str = PREP
    call: Call | None = None
    holds_lock: bool = False
    steps: int = 0  # UNet forwards served
    prep: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def request_id(self) -> str:
        return self.ctx.request_id

    def enter_prep(self) -> None:
        """Take the model lock: prompt encoding and the VAE encode run between steps."""
        self.lock.acquire()
        self.holds_lock = True

    def leave_prep(self) -> None:
        """Undo the preparation's LoRA activation and free the lock (idempotent)."""
        if not self.holds_lock:
            return
        try:
            self.prep.close()
        finally:
            self.holds_lock = False
            self.lock.release()


class _ModuleProxy:
    """Stands in for a module on one request's pipeline copy; reads go to the module."""

    def __init__(self, module: Any, member: Member) -> None:
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "_member", member)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


class UNetProxy(_ModuleProxy):
    """``pipe.unet(...)`` becomes one row-slice of the step's batched forward."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._member.submit(unet_call(self._member, self._module, args, kwargs))


class VaeProxy(_ModuleProxy):
    """``pipe.vae.decode(...)`` joins the step's batched decode; ``encode`` runs directly
    (only during preparation, under the model lock).

    SDXL pipelines upcast a float16 VAE around the decode with ``vae.to(float32)`` and back.
    During preparation that reaches the module (the lock is held); afterwards it only records
    the dtype the decode must run in, and the loop applies it under the lock.
    """

    def __init__(self, module: Any, member: Member) -> None:
        super().__init__(module, member)
        object.__setattr__(self, "_decode_dtype", None)

    @property
    def dtype(self) -> Any:
        return self._decode_dtype or self._module.dtype

    def to(self, *args: Any, **kwargs: Any) -> VaeProxy:
        if self._member.holds_lock:
            self._module.to(*args, **kwargs)
            return self
        dtype = kwargs.get("dtype") or next((a for a in args if _is_dtype(a)), None)
        if dtype is not None:
            object.__setattr__(self, "_decode_dtype", dtype)
        return self

    def decode(self, *args: Any, **kwargs: Any) -> Any:
        call = decode_call(self._member, self._module, args, kwargs, self._decode_dtype)
        return self._member.submit(call)


def request_pipeline(base: Any, scheduler: Any, member: Member) -> Any:
    """A shallow copy of ``base`` with its own scheduler and proxied UNet and VAE.

    The copy shares every module and processor with ``base``; per-call state the pipeline
    sets on ``self`` (guidance scale, step count, interrupt flag) stays on the copy.
    """
    pipe = copy.copy(base)
    pipe.__dict__.update(  # bypass DiffusionPipeline.__setattr__: the config stays as it is
        scheduler=scheduler,
        unet=UNetProxy(base.unet, member),
        vae=VaeProxy(base.vae, member),
    )
    return pipe


# -- normalising calls ---------------------------------------------------------------------


@functools.cache
def _signature(cls: type, method: str) -> inspect.Signature:
    return inspect.signature(getattr(cls, method))


def _bind(module: Any, method: str, args: tuple, kwargs: dict) -> dict[str, Any]:
    bound = _signature(type(module), method).bind(module, *args, **kwargs)
    arguments = dict(bound.arguments)
    arguments.pop(next(iter(arguments)))  # self
    return arguments


def _is_dtype(value: Any) -> bool:
    import torch

    return isinstance(value, torch.dtype)


def _tail(value: Any) -> Any:
    return None if value is None else (tuple(value.shape[1:]), value.dtype)


def unet_call(member: Member, unet: Any, args: tuple, kwargs: dict) -> Call:
    """Describe one UNet call; calls that batch together get the same key.

    Per-sample inputs (latents, timesteps, prompt embeddings, timestep conditioning, SDXL's
    ``text_embeds``/``time_ids``) are stacked along the batch; a call with anything else
    (ControlNet residuals, attention masks, IP-adapter embeddings) runs on its own.
    """
    import torch

    a = _bind(unet, "forward", args, kwargs)
    sample = a["sample"]
    rows = int(sample.shape[0])
    call = Call(member, "unet", args, kwargs, None, rows, return_dict=a.get("return_dict", True))
    t = a["timestep"]
    t = t if torch.is_tensor(t) else torch.tensor(t)
    t = t.to(device=sample.device, dtype=torch.float32).reshape(-1)  # as the UNet's time_proj
    ehs, cond = a.get("encoder_hidden_states"), a.get("timestep_cond")
    added = a.get("added_cond_kwargs") or {}
    extra = [k for k, v in a.items() if k not in _UNET_BATCHED | {"return_dict"} and v is not None]
    per_sample = [v for v in (ehs, cond, *added.values()) if v is not None]
    if (
        extra
        or t.numel() not in (1, rows)
        or not all(torch.is_tensor(v) and v.ndim > 0 and v.shape[0] == rows for v in per_sample)
    ):
        call.key = ("solo", id(call))
        return call
    call.parts = {
        "sample": sample,
        "timestep": t.expand(rows),
        "encoder_hidden_states": ehs,
        "timestep_cond": cond,
        "added": added,
    }
    call.key = (
        "unet",
        _tail(sample),
        str(sample.device),
        _tail(ehs),
        _tail(cond),
        tuple(sorted((k, _tail(v)) for k, v in added.items())),
        member.loras,
    )
    return call


def decode_call(member: Member, vae: Any, args: tuple, kwargs: dict, dtype: Any) -> Call:
    """Describe one ``vae.decode``; same-shape decodes of a step run as one batch."""
    a = _bind(vae, "decode", args, kwargs)
    z = a["z"]
    call = Call(member, "decode", args, kwargs, None, int(z.shape[0]), parts=a)
    call.return_dict = a.get("return_dict", True)
    extra = [
        k for k, v in a.items() if k not in ("z", "return_dict", "generator") and v is not None
    ]
    call.key = ("solo", id(call)) if extra else ("decode", _tail(z), str(z.device))
    call.key += (dtype,)
    return call


# -- running a group of calls (the loop thread, under the model lock) ----------------------


def run_unet_group(unet: Any, calls: Sequence[Call]) -> None:
    """One forward for every call in ``calls``; each gets its rows back in its own shape."""
    import torch
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    if len(calls) == 1:
        (call,) = calls
        call.result = unet(*call.args, **call.kwargs)  # exactly the pipeline's own call
        return
    parts = [c.parts for c in calls]
    kwargs: dict[str, Any] = {}
    for name in ("encoder_hidden_states", "timestep_cond"):
        if parts[0][name] is not None:
            kwargs[name] = torch.cat([p[name] for p in parts])
    if parts[0]["added"]:
        kwargs["added_cond_kwargs"] = {
            k: torch.cat([p["added"][k] for p in parts]) for k in parts[0]["added"]
        }
    out = unet(
        torch.cat([p["sample"] for p in parts]),
        torch.cat([p["timestep"] for p in parts]),
        return_dict=False,
        **kwargs,
    )[0]
    for call, rows in zip(calls, out.split([c.rows for c in calls]), strict=True):
        call.result = UNet2DConditionOutput(sample=rows) if call.return_dict else (rows,)


def run_decode_group(vae: Any, calls: Sequence[Call]) -> None:
    """One VAE decode for every call in ``calls``, in the dtype their pipeline asked for."""
    import torch
    from diffusers.models.autoencoders.vae import DecoderOutput

    dtype, original = calls[0].key[-1], vae.dtype
    upcast = dtype is not None and dtype != original
    if upcast:
        vae.to(dtype=dtype)
    try:
        if len(calls) == 1:
            (call,) = calls
            a = dict(call.parts)
            a["z"] = a["z"].to(dtype) if upcast else a["z"]
            call.result = vae.decode(**a)
            return
        z = torch.cat([c.parts["z"] for c in calls])
        out = vae.decode(z.to(dtype) if upcast else z, return_dict=False)[0]
        for call, rows in zip(calls, out.split([c.rows for c in calls]), strict=True):
            call.result = DecoderOutput(sample=rows) if call.return_dict else (rows,)
    finally:
        if upcast:
            vae.to(dtype=original)
