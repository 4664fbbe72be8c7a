"""An impasto package behind the Hugging Face inference toolkit's handler functions.

A SageMaker archive that ``impasto build --format sagemaker`` writes for an impasto package
carries a ``code/inference.py`` that imports the four functions below, so the archive
deploys on the toolkit's containers unchanged while impasto's runtime serves the package:
``model_fn`` loads it (the ``model_cache`` downloads first) in a runner with its own event
loop thread; ``input_fn`` parses the body as ``/invocations`` does for impasto packages
(``{"inputs": ..., "parameters": {...}}`` or the endpoint's own fields); ``predict_fn`` runs
one prediction through admission, decoding with limits, slots and batching; ``output_fn``
encodes the result for the Accept (PNG bytes for ``image/png``, JSON otherwise).

A handler that raises makes the toolkit answer 400 with the message, as for any handler.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..context import OutputPrefs
from ..errors import MalformedInput, NotReady, PayloadTooLarge
from ..package import Package, load_package, package_scope
from ..runner import Runner
from ..serving import runner_for
from . import codec
from .folder import SHIM_MARKER

__all__ = ["SHIM_MARKER", "ToolkitModel", "input_fn", "model_fn", "output_fn", "predict_fn"]

T = TypeVar("T")


@dataclass(frozen=True)
class Body:
    """What ``input_fn`` hands ``predict_fn``: the raw body and its content type."""

    data: bytes
    content_type: str | None


@dataclass(frozen=True)
class ToolkitRequest:
    """A parsed request: the payload and the endpoint it goes to (None: the default)."""

    payload: Any
    endpoint: str | None = None


class ToolkitModel:
    """A loaded package and its runner, driven from the toolkit's (synchronous) threads."""

    def __init__(self, package: Package) -> None:
        self.package = package
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="impasto-toolkit", daemon=True
        )
        self._thread.start()
        self.runner: Runner = self.call(_make_runner(package))

    @classmethod
    def open(cls, model_dir: str | Path) -> ToolkitModel:
        from ..store.prefetch import prefetch

        root = Path(model_dir).resolve()
        package = load_package(root)
        with package_scope(root, package.config):
            prefetch(root, package.config)
        model = cls(package)
        if not model.call(model.runner.load()):
            model.close()
            raise NotReady(f"{package.name} failed to load: {model.runner.load_error}")
        return model

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def decode(self, body: bytes | str, content_type: str | None) -> ToolkitRequest:
        kind = (content_type or codec.JSON).split(";")[0].strip().lower()
        if kind != codec.JSON:
            raise MalformedInput(
                f"Content type {kind} is not supported for this model: send "
                'application/json, {"inputs": ..., "parameters": {...}} or the endpoint\'s '
                "own fields, with media as base64",
                field="body",
            )
        from ..server.requests import parse_json

        runtime = self.runner.config.runtime
        data = body.encode() if isinstance(body, str) else body
        if len(data) > runtime.max_body_bytes:
            raise PayloadTooLarge(
                f"the body is over runtime.max_body_bytes ({runtime.max_body_bytes})",
                field="body",
            )
        payload = parse_json(data, runtime.max_json_depth)
        endpoint = None
        if isinstance(payload, dict) and isinstance(payload.get("endpoint"), str):
            fields = self.runner.endpoint(None).input_model
            if fields is None or "endpoint" not in fields.model_fields:
                endpoint = payload.pop("endpoint")
        from ..server.adapters.sagemaker import from_toolkit

        model = self.runner.endpoint(endpoint).input_model
        return ToolkitRequest(from_toolkit(payload, model), endpoint)

    def predict(self, request: ToolkitRequest) -> Any:
        """Run one decoded request; the endpoint's output (a stream gathered)."""
        return self.call(_predict(self.runner, request))

    def encode(self, result: Any, accept: str | None) -> bytes:
        from ..server.responses import render

        wanted = codec.accept_type(accept)
        prefs = OutputPrefs(accept=None if wanted == codec.JSON else wanted)
        response = self.call(render(result, prefs, self.runner.config.media))
        return bytes(response.body)

    def close(self) -> None:
        self.call(self.runner.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


async def _make_runner(package: Package) -> Runner:
    return runner_for(package)  # built on the loop it will run on


async def _predict(runner: Runner, request: ToolkitRequest) -> Any:
    result = await runner.predict(request.payload, request.endpoint)
    if runner.endpoint(request.endpoint).streams:
        from ..server.responses import gathered

        chunks = [chunk async for chunk in result]
        return gathered(chunks, runner.config.media)
    return result


# -- the toolkit's handler functions ------------------------------------------------------------


@dataclass(frozen=True)
class ToolkitResult:
    """What ``predict_fn`` hands ``output_fn``: the output and the model that encodes it
    (with the package's media settings)."""

    value: Any
    model: ToolkitModel


def model_fn(model_dir: str) -> ToolkitModel:
    """Load the impasto package in ``model_dir`` (``/opt/ml/model`` on SageMaker)."""
    return ToolkitModel.open(model_dir)


def input_fn(input_data: bytes | str, content_type: str) -> Body:
    """Keep the body and its type: the toolkit gives ``input_fn`` no model, so the body is
    parsed against the package's endpoint (with its limits) in ``predict_fn``."""
    raw = input_data.encode() if isinstance(input_data, str) else bytes(input_data)
    return Body(raw, content_type)


def predict_fn(data: Body, model: ToolkitModel) -> ToolkitResult:
    """One prediction through impasto's runtime. ``"endpoint": NAME`` in a JSON body picks
    an endpoint other than the default one."""
    return ToolkitResult(model.predict(model.decode(data.data, data.content_type)), model)


def output_fn(prediction: ToolkitResult, accept: str) -> bytes:
    """The output encoded for ``accept``: image bytes for an image type, else JSON."""
    return prediction.model.encode(prediction.value, accept)
