"""The ``context`` a SageMaker handler may take as its last argument, as the toolkit's model
server (MMS) gives it.

User code reads request headers through it (``context.request_processor[0]
.get_request_properties()``, ``context.get_request_header(0, name)``), system properties
(``context.system_properties["model_dir"]``, ``["gpu_id"]``) and sets response headers or a
status (``context.set_response_header(0, "X-Amzn-SageMaker-Custom-Attributes", ...)``),
which impasto writes on the response. Each request gets its own context, so concurrent
requests never see each other's headers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from .. import __version__

log = logging.getLogger("impasto.sagemaker")

CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
_CANONICAL = {
    name.lower(): name
    for name in (
        "Content-Type",
        "Accept",
        "Content-Length",
        CUSTOM_ATTRIBUTES,
        "X-Amzn-SageMaker-Target-Model",
        "X-Amzn-SageMaker-Target-Variant",
        "X-Amzn-SageMaker-Inference-Id",
        "X-Amzn-SageMaker-Enable-Explanations",
        "X-Amzn-SageMaker-Session-Id",
    )
}


class Headers(dict):
    """Request headers with their usual spelling as keys, looked up in any case (HTTP/1.1
    servers hand header names over in lower case; handlers ask for ``"Accept"``)."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__()
        for key, value in items:
            self[_CANONICAL.get(key.lower(), key)] = value

    def _key(self, key: Any) -> Any:
        if isinstance(key, str):
            lower = key.lower()
            for existing in self.keys():
                if existing.lower() == lower:
                    return existing
        return key

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(self._key(key))

    def __contains__(self, key: object) -> bool:
        return super().__contains__(self._key(key))

    def get(self, key: Any, default: Any = None) -> Any:
        return super().get(self._key(key), default)


class RequestProcessor:
    """One request's headers in, and the status and headers its response goes out with."""

    def __init__(self, request_header: Headers) -> None:
        self._request_header = request_header
        self._status_code = 200
        self._reason_phrase: str | None = None
        self._response_header: dict[str, str] = {}

    def get_request_property(self, key: str) -> Any:
        return self._request_header.get(key)

    def get_request_properties(self) -> Headers:
        return self._request_header

    def report_status(self, code: int, reason: str | None = None) -> None:
        self._status_code = code
        self._reason_phrase = reason

    def get_response_status_code(self) -> int:
        return self._status_code

    def get_response_status_phrase(self) -> str | None:
        return self._reason_phrase

    def add_response_property(self, key: str, value: Any) -> None:
        self._response_header[key] = str(value)

    def get_response_headers(self) -> dict[str, str]:
        return self._response_header

    def get_response_header(self, key: str) -> str | None:
        return self._response_header.get(key)


class Metrics:
    """``context.metrics``: what a handler records is logged at debug level."""

    def __init__(self) -> None:
        self.recorded: list[tuple[str, str, Any, str]] = []

    def _add(self, kind: str, name: str, value: Any, unit: str) -> None:
        self.recorded.append((kind, name, value, unit))
        log.debug("handler metric %s %s=%s %s", kind, name, value, unit)

    def add_time(self, name: str, value: Any, idx: Any = None, unit: str = "ms") -> None:
        self._add("time", name, value, unit)

    def add_size(self, name: str, value: Any, idx: Any = None, unit: str = "MB") -> None:
        self._add("size", name, value, unit)

    def add_percent(self, name: str, value: Any, idx: Any = None) -> None:
        self._add("percent", name, value, "percent")

    def add_counter(self, name: str, value: Any, idx: Any = None, dimensions: Any = None) -> None:
        self._add("counter", name, value, "count")

    def add_error(self, name: str, value: Any, dimensions: Any = None) -> None:
        self._add("error", name, value, "")

    def add_metric(self, name: str, value: Any, unit: str = "", idx: Any = None, **_: Any) -> None:
        self._add("metric", name, value, unit)


class Context:
    """The MMS context: system properties, and (for a request) its request processor."""

    def __init__(
        self,
        model_name: str,
        model_dir: str,
        *,
        gpu_id: int | None = None,
        headers: Headers | None = None,
        request_id: str | None = None,
    ) -> None:
        self.model_name = model_name
        self.manifest = {"model": {"modelName": model_name}}
        self._system_properties = {
            "model_dir": model_dir,
            "gpu_id": gpu_id,
            "batch_size": 1,
            "server_name": "impasto",
            "server_version": __version__,
        }
        self.request_ids = {0: request_id} if request_id else None
        self.request_processor = [RequestProcessor(headers)] if headers is not None else None
        self.metrics = Metrics()

    @property
    def system_properties(self) -> dict[str, Any]:
        return self._system_properties

    def for_request(self, headers: Headers, request_id: str) -> Context:
        """A context for one request, with this one's system properties."""
        props = self._system_properties
        return Context(
            self.model_name,
            props["model_dir"],
            gpu_id=props["gpu_id"],
            headers=headers,
            request_id=request_id,
        )

    def get_request_id(self, idx: int = 0) -> str | None:
        return (self.request_ids or {}).get(idx)

    def _processor(self, idx: int) -> RequestProcessor:
        if not self.request_processor:
            raise RuntimeError("this context belongs to no request (it is model_fn's)")
        return self.request_processor[idx]

    def get_request_header(self, idx: int, key: str) -> Any:
        return self._processor(idx).get_request_property(key)

    def get_all_request_header(self, idx: int) -> Headers:
        return self._processor(idx).get_request_properties()

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.set_response_header(idx, "Content-Type", value)

    def get_response_content_type(self, idx: int) -> str | None:
        return self.get_response_headers(idx).get("Content-Type")

    def get_response_status(self, idx: int) -> tuple[int, str | None]:
        p = self._processor(idx)
        return p.get_response_status_code(), p.get_response_status_phrase()

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self._processor(idx).report_status(code, phrase)

    def set_all_response_status(self, code: int = 200, phrase: str = "") -> None:
        for p in self.request_processor or ():
            p.report_status(code, phrase)

    def get_response_headers(self, idx: int) -> dict[str, str]:
        return self._processor(idx).get_response_headers()

    def set_response_header(self, idx: int, key: str, value: Any) -> None:
        self._processor(idx).add_response_property(key, value)


def gpu_id() -> int | None:
    """0 when a CUDA device is visible (what MMS gives its first worker), else None."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    return 0 if torch.cuda.is_available() else None
