"""A small client for impasto's asynchronous predictions (Cog's job API), over httpx.

::

    from impasto import Client

    with Client("http://127.0.0.1:8080") as client:
        job = client.submit({"prompt": "a red fox"})      # accepted: durable from here
        for event in client.stream(job["id"]):            # start, log, progress, output...
            print(event.kind, event.data)
        done = client.wait(job["id"])                     # the final prediction object
        output = client.predict({"prompt": "a cat"})      # submit + wait; raises if it failed

A stream that drops reconnects where it left off (``Last-Event-ID``), so a waiting client
survives a proxy's idle timeout or a server restart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from .errors import (
    Canceled,
    ImpastoError,
    InputError,
    MalformedInput,
    ModelError,
    NotFound,
    NotReady,
    Overloaded,
    PredictTimeout,
    Unreachable,
)

TERMINAL = ("succeeded", "failed", "canceled")
_BY_STATUS: dict[int, type[ImpastoError]] = {
    400: MalformedInput,
    404: NotFound,
    409: Overloaded,
    415: MalformedInput,
    422: InputError,
    429: Overloaded,
    503: NotReady,
}


@dataclass(frozen=True)
class JobEvent:
    """One server-sent event of a job: ``start``, ``log``, ``progress``, ``output`` or
    ``completed`` (whose data is the final prediction object)."""

    kind: str
    data: Any
    id: str | None = None


class Client:
    """Submit, follow, wait for and cancel predictions on a running server."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # requests -------------------------------------------------------------------------------
    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(
                f"no server answers at {self.url} ({type(exc).__name__}); is `impasto serve` "
                "running?"
            ) from None
        if response.status_code >= 400:
            raise _error(response)
        return response.json()

    @staticmethod
    def _route(model: str | None, endpoint: str | None) -> str:
        if endpoint and not model:
            raise ValueError("endpoint= needs model= (the model that serves it)")
        if model:
            return f"/models/{model}{':' + endpoint if endpoint else ''}/predictions"
        return "/predictions"

    def submit(
        self,
        input: dict[str, Any] | None = None,
        *,
        model: str | None = None,
        endpoint: str | None = None,
        id: str | None = None,
        webhook: str | None = None,
        webhook_events_filter: list[str] | None = None,
    ) -> dict[str, Any]:
        """Submit a prediction; returns it once the server has committed it (``starting``).
        With ``id``, submitting again returns the same job instead of a second one."""
        body: dict[str, Any] = {"input": input or {}}
        if id is not None:
            body["id"] = id
        if webhook is not None:
            body["webhook"] = webhook
        if webhook_events_filter is not None:
            body["webhook_events_filter"] = webhook_events_filter
        headers = {"Prefer": "respond-async"}
        if id is not None and model is None and endpoint is None:
            return self._send("PUT", f"/predictions/{id}", json=body, headers=headers)
        return self._send("POST", self._route(model, endpoint), json=body, headers=headers)

    def get(self, id: str) -> dict[str, Any]:
        """The prediction as it stands."""
        return self._send("GET", f"/predictions/{id}")

    def list(
        self, *, status: str | None = None, model: str | None = None, page_size: int = 100
    ) -> Iterator[dict[str, Any]]:
        """Predictions, newest first, page after page (``status`` in Cog's words)."""
        params: dict[str, Any] = {"page_size": page_size}
        if status:
            params["status"] = status
        if model:
            params["model"] = model
        page = self._send("GET", "/predictions", params=params)
        while True:
            yield from page["results"]
            if not page.get("next"):
                return
            page = self._send("GET", page["next"])

    def cancel(self, id: str) -> dict[str, Any]:
        """Cancel it: a queued prediction never starts, a running one stops within a step."""
        return self._send("POST", f"/predictions/{id}/cancel")

    # following ------------------------------------------------------------------------------
    def stream(self, id: str, *, timeout: float | None = None) -> Iterator[JobEvent]:
        """The prediction's events until ``completed``, reconnecting where it left off if
        the connection drops (until ``timeout`` seconds have passed, if given)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last: str | None = None
        pause = 0.2
        while True:
            headers = {"Accept": "text/event-stream"}
            if last is not None:
                headers["Last-Event-ID"] = last
            try:
                with self._http.stream(
                    "GET",
                    f"/predictions/{id}",
                    headers=headers,
                    timeout=httpx.Timeout(30, read=None),
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise _error(response)
                    for event in _parse(response.iter_lines()):
                        last = event.id or last
                        pause = 0.2
                        yield event
                        if event.kind == "completed":
                            return
            except httpx.TransportError:
                pass  # dropped: reconnect from the last event seen
            if deadline is not None and time.monotonic() > deadline:
                raise PredictTimeout(f"prediction {id} did not finish within {timeout} s")
            time.sleep(pause)
            pause = min(pause * 2, 2.0)

    def wait(
        self,
        id: str,
        *,
        timeout: float | None = None,
        on_event: Callable[[JobEvent], None] | None = None,
    ) -> dict[str, Any]:
        """The final prediction object once it has ended (any status)."""
        for event in self.stream(id, timeout=timeout):
            if on_event is not None:
                on_event(event)
            if event.kind == "completed":
                return event.data
        return self.get(id)

    def predict(
        self,
        input: dict[str, Any] | None = None,
        *,
        model: str | None = None,
        endpoint: str | None = None,
        timeout: float | None = None,
        on_event: Callable[[JobEvent], None] | None = None,
    ) -> Any:
        """Submit and wait; the output, or the error it ended with (``ModelError`` when it
        failed, ``Canceled`` when it was canceled)."""
        job = self.submit(input, model=model, endpoint=endpoint)
        done = self.wait(job["id"], timeout=timeout, on_event=on_event)
        if done["status"] == "failed":
            raise ModelError(f"prediction {job['id']} failed: {done.get('error')}")
        if done["status"] == "canceled":
            raise Canceled(f"prediction {job['id']} was canceled")
        return done.get("output")


def _parse(lines: Iterator[str]) -> Iterator[JobEvent]:
    kind, ident, data = None, None, []
    for line in lines:
        if line.startswith(":"):
            continue
        if not line:
            if kind is not None:
                yield JobEvent(kind, json.loads("\n".join(data)) if data else None, ident)
            kind, ident, data = None, None, []
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("id:"):
            ident = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


def _error(response: httpx.Response) -> ImpastoError:
    """The server's error as impasto's own exception (exit codes follow)."""
    try:
        body = response.json()
    except ValueError:
        body = response.text
    message = body
    if isinstance(body, dict):
        if "detail" in body and isinstance(body["detail"], list) and body["detail"]:
            first = body["detail"][0]
            where = ".".join(str(x) for x in first.get("loc", [])[1:])
            message = f"{where}: {first.get('msg')}"
        else:
            message = body.get("error") or body
            if isinstance(message, dict):
                message = message.get("message", message)
    cls = _BY_STATUS.get(response.status_code, ImpastoError)
    return cls(f"{response.request.url} answered {response.status_code}: {message}")


__all__ = ["Client", "JobEvent"]
