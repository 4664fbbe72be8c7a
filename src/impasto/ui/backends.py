"""Where the playground's predictions run: in-process, or on a remote impasto server.

Both speak one small language to the page: a :class:`Run` yields :class:`Update` values
(``progress``, ``preview``, ``log``, ``chunk``, then ``result`` or ``error``) and can be
canceled. :class:`LocalBackend` takes the server's own call path (admit, decode, run,
the prediction's events; the same validation, limits, batching and metrics as every route)
and cancels with ``Prediction.abort("canceled")``. :class:`RemoteBackend` uses impasto's
HTTP API: ``/openapi.json`` for the forms, ``Accept: text/event-stream`` for progress, and
closing the stream to cancel (the server aborts a prediction whose client went away).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from .. import __version__
from ..context import Event
from ..errors import ImpastoError, Unreachable
from ..prediction import Prediction
from ..runner import Runner
from .describe import EndpointView, ModelView, endpoint_view, views_from_openapi
from .snippets import Upload


@dataclass(frozen=True)
class Update:
    """One thing the page shows about a running prediction."""

    kind: str  # progress | preview | log | chunk | result | error
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadState:
    state: str  # ready | loading | pending | failed | shutting_down | unreachable
    message: str = ""


class Run(Protocol):
    def updates(self) -> AsyncIterator[Update]: ...

    def cancel(self) -> None: ...


class Authorizer(Protocol):
    """The server's API keys (``accepts(key)``), as the HTTP routes check them."""

    def accepts(self, key: str | None) -> bool: ...


class Backend(Protocol):
    auth_required: bool

    def views(self) -> list[ModelView]: ...

    async def state(self, model: str) -> LoadState: ...

    async def start(self, view: EndpointView, payload: Any, api_key: str | None) -> Run: ...


class Unauthorized(ImpastoError):
    status = 401
    type = "unauthorized"


def wire_payload(payload: Any) -> Any:
    """The payload as JSON: each uploaded file as base64 text, as any JSON client sends it."""
    if not isinstance(payload, dict):
        return payload
    return {
        k: base64.b64encode(v.data).decode("ascii") if isinstance(v, Upload) else v
        for k, v in payload.items()
    }


def error_update(message: str, kind: str = "error", field: str | None = None) -> Update:
    return Update("error", {"type": kind, "message": message, "field": field})


def _preview_image(value: Any) -> Any:
    """A preview as a PIL image (the model's own, or a base64 JPEG from the server)."""
    if isinstance(value, str):
        from PIL import Image

        data = value.split(",", 1)[1] if value.startswith("data:") else value
        return Image.open(io.BytesIO(base64.b64decode(data)))
    return value


# in-process ----------------------------------------------------------------------------------
class LocalBackend:
    """Predictions through this server's own call path, in its event loop."""

    def __init__(self, models: Any, auth: Authorizer | None = None) -> None:
        self.models = models
        self.auth = auth
        self._views: list[ModelView] | None = None

    @property
    def auth_required(self) -> bool:
        return bool(self.auth)

    def views(self) -> list[ModelView]:
        if self._views is None:
            from ..server.openapi import schema_of

            several = len(self.models) > 1
            out = []
            for runner in self.models:
                eps = []
                for ep in runner.spec.endpoints.values():
                    defs: dict[str, Any] = {}
                    schema = schema_of(ep.input_model, defs)
                    default = runner is self.models.default or not several
                    path = ep.route if default else f"/v1/models/{runner.name}/{ep.name}"
                    view = endpoint_view(
                        runner.name,
                        ep.name,
                        path,
                        schema,
                        defs,
                        description=ep.description or "",
                        streams=ep.streams,
                    )
                    eps.append(view)
                out.append(ModelView(runner.name, tuple(eps)))
            self._views = out
        return self._views

    async def state(self, model: str) -> LoadState:
        runner = self.models.get(model)
        if runner.closing:
            return LoadState("shutting_down", "the server is shutting down")
        if runner.state == "failed":
            return LoadState("failed", runner.load_error or "load() failed")
        return LoadState(runner.state)

    async def start(self, view: EndpointView, payload: Any, api_key: str | None) -> Run:
        if self.auth and not self.auth.accepts(api_key):
            raise Unauthorized(
                "invalid API key" if api_key else "missing API key: enter one above",
                field="api_key",
            )
        from ..server.requests import prefs_from

        runner, ep = self.models.resolve(view.model, view.endpoint)
        body = wire_payload(payload)
        fields = ep.input_model.model_fields if ep.input_model else None
        prefs = prefs_from(body, fields)
        p = runner.admit(ep, output=prefs)  # 429/503 at once, as over HTTP
        return LocalRun(runner, p, body)


class LocalRun:
    """One in-process prediction: decode and run in a task, events to the page."""

    def __init__(self, runner: Runner, p: Prediction, body: Any) -> None:
        self.runner = runner
        self.p = p
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._unsubscribe = p.subscribe(self._queue.put_nowait)
        self._task = asyncio.create_task(self._work(body), name=f"impasto-ui-{p.id}")

    async def _work(self, body: Any) -> None:
        from ..server.callpath import execute

        p = self.p
        p.bind(asyncio.current_task())
        try:
            with p.cancellation():
                value = await self.runner.decode(p, body)
        except ImpastoError as exc:
            p.finish(exc)
            return
        finally:
            p.bind(None)
        await execute(self.runner, p, value)

    def cancel(self) -> None:
        """The same abort as every other cancel: the model stops at its next step."""
        self.p.abort("canceled")

    async def updates(self) -> AsyncIterator[Update]:
        from ..media import to_jsonable

        media = self.runner.config.media
        prefs = self.p.ctx.output
        try:
            while True:
                event = await self._queue.get()
                kind, data = event.kind, event.data
                if kind in ("progress", "log"):
                    yield Update(kind, dict(data))
                elif kind == "preview":
                    yield Update("preview", {"step": data.get("step"), "image": data.get("image")})
                elif kind == "output" and "chunk" in data:
                    chunk = await asyncio.to_thread(to_jsonable, data["chunk"], config=media)
                    yield Update("chunk", {"chunk": chunk})
                elif kind == "output":
                    try:
                        result = await asyncio.to_thread(
                            to_jsonable,
                            data["output"],
                            format=prefs.format,
                            quality=prefs.quality,
                            config=media,
                        )
                    except ImpastoError as exc:
                        yield Update("error", exc.to_dict()["error"])
                        return
                    yield Update("result", {"output": result})
                elif kind == "completed":
                    if "error" in data:
                        yield Update("error", dict(data["error"]))
                    return
        finally:
            self._unsubscribe()
            if not self._task.done():  # the page went away: as a client disconnect
                self.p.abort("disconnected")
                with contextlib.suppress(BaseException):
                    await self._task


# over HTTP -----------------------------------------------------------------------------------
class RemoteBackend:
    """A remote impasto server, through its HTTP API."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._transport = transport
        self._client: httpx.AsyncClient | None = None  # made in the serving loop
        self._views: list[ModelView] = []
        self.auth_required = bool(api_key)

    def _headers(self, key: str | None) -> dict[str, str]:
        key = key or self.api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.url,
                timeout=httpx.Timeout(self.timeout, read=None),
                transport=self._transport,
                headers={"User-Agent": f"impasto-ui/{__version__}"},
            )
        return self._client

    def connect_sync(self) -> None:
        """Read the remote ``/openapi.json`` once, before the page is built."""
        try:
            with httpx.Client(base_url=self.url, timeout=self.timeout) as client:
                response = client.get("/openapi.json")
                if response.status_code == 401:
                    self.auth_required = True
                    if not self.api_key:
                        raise Unreachable(f"{self.url} asks for an API key: pass --api-key")
                    response = client.get("/openapi.json", headers=self._headers(None))
        except httpx.HTTPError as exc:
            raise Unreachable(f"cannot reach {self.url}: {exc}") from None
        if response.status_code != 200:
            message = _error_of(response)["message"]
            raise Unreachable(f"{self.url}/openapi.json answered {response.status_code}: {message}")
        self._views = views_from_openapi(response.json())

    def views(self) -> list[ModelView]:
        return self._views

    async def state(self, model: str) -> LoadState:
        try:
            response = await self.client.get(f"/v1/models/{model}", headers=self._headers(None))
        except httpx.HTTPError as exc:
            return LoadState("unreachable", f"{self.url}: {exc}")
        if response.status_code == 200:
            return LoadState("ready")
        message = _error_of(response).get("message", response.text[:200])
        for state in ("failed", "shutting down", "loading", "pending"):
            if state in message:
                return LoadState(state.replace(" ", "_"), message)
        return LoadState("not_ready", message)

    async def start(self, view: EndpointView, payload: Any, api_key: str | None) -> Run:
        return RemoteRun(self.client, view, wire_payload(payload), self._headers(api_key))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


class RemoteRun:
    """One prediction over HTTP with ``Accept: text/event-stream``; cancel closes the stream."""

    def __init__(
        self, client: httpx.AsyncClient, view: EndpointView, body: Any, headers: dict[str, str]
    ) -> None:
        self._queue: asyncio.Queue[Update | None] = asyncio.Queue()
        self._canceled = False
        headers = {**headers, "Accept": "text/event-stream"}
        self._task = asyncio.create_task(self._read(client, view, body, headers))

    async def _read(
        self, client: httpx.AsyncClient, view: EndpointView, body: Any, headers: dict[str, str]
    ) -> None:
        put = self._queue.put_nowait
        try:
            async with client.stream("POST", view.path, json=body, headers=headers) as response:
                if response.status_code != 200:
                    await response.aread()
                    put(Update("error", _error_of(response)))
                    return
                async for name, data in _sse(response):
                    put(_remote_update(name, data, view.streams))
        except httpx.HTTPError as exc:
            put(error_update(f"the server could not be reached: {exc}", "unreachable"))
        finally:
            put(None)

    def cancel(self) -> None:
        """Close the stream: the server aborts a prediction whose client went away."""
        self._canceled = True
        self._task.cancel()

    async def updates(self) -> AsyncIterator[Update]:
        try:
            while True:
                update = await self._queue.get()
                if update is None:
                    if self._canceled:
                        yield error_update("canceled", "canceled")
                    return
                yield update
                if update.kind in ("result", "error"):
                    return
        finally:
            if not self._task.done():
                self._task.cancel()


def _remote_update(name: str, data: str, streams: bool) -> Update:
    try:
        value = json.loads(data) if data else None
    except json.JSONDecodeError:
        value = data
    if name == "progress" or name == "log":
        return Update(name, value if isinstance(value, dict) else {})
    if name == "preview" and isinstance(value, dict):
        return Update(
            "preview", {"step": value.get("step"), "image": _preview_image(value["image"])}
        )
    if name == "result":
        return Update("result", {"output": value})
    if name == "error":
        inner = value.get("error", value) if isinstance(value, dict) else {"message": str(value)}
        return Update("error", inner)
    return Update("chunk", {"chunk": value})  # a streaming endpoint's data frame


async def _sse(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event name, data) of each server-sent event (name ``message`` when absent)."""
    name, data = "message", []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield name, "\n".join(data)


def _error_of(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return dict(body["error"])
    return {
        "type": "http_error",
        "message": f"HTTP {response.status_code}: {response.text[:300]}",
        "field": None,
    }
