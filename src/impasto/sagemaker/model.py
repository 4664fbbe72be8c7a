"""A SageMaker model folder as an impasto model: the toolkit's handler chain in three steps.

``preprocess`` is ``input_fn`` (or the default decoder), ``predict`` is ``predict_fn`` (or
the default pipeline call), ``postprocess`` is ``output_fn`` (or the default encoder), so
decoding and encoding overlap with other requests' predictions while only ``predict`` holds
the model; a ``transform_fn`` takes the model and so runs whole in ``predict``. Whatever a
handler raises becomes the toolkit's 400 (:class:`HandlerFailed`), except a cancellation,
which keeps its own status (504 past the deadline).
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from starlette.responses import Response

from ..config import MediaConfig
from ..context import RequestContext
from ..errors import ImpastoError
from . import codec
from .handlers import Handlers
from .mms import Context, Headers, gpu_id
from .pipeline import current_request, default_model_fn, default_predict_fn

log = logging.getLogger("impasto.sagemaker")


class HandlerFailed(ImpastoError):
    """A SageMaker handler raised: the toolkit answers 400 with the exception's text."""

    status = 400
    exit_code = 10
    type = "InternalServerException"


@dataclass
class Invocation:
    """One ``/invocations`` request as the handlers see it."""

    body: bytes
    content_type: str | None
    accept: str
    headers: Headers = field(default_factory=Headers)


@dataclass
class Staged:
    """A request between the handler steps."""

    invocation: Invocation
    context: Context
    data: Any = None


class Reply(Response):
    """The handler chain's answer: body bytes, ``Content-Type`` set to the Accept (as the
    toolkit does), the status and headers a handler set through its context."""

    def __init__(self, body: bytes, content_type: str, status: int, headers: dict[str, str]):
        extra = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        super().__init__(body, status_code=status, headers={**extra, "content-type": content_type})


class SageMakerModel:
    """Serves one SageMaker model folder; ``model_class_for`` makes one subclass per folder."""

    impasto_kind: ClassVar[str] = "sagemaker"
    handlers: ClassVar[Handlers] = Handlers()
    model_dir: ClassVar[Callable[[], str]]  # the folder, or HF_MODEL_ID's download

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        config = config or {}
        self.name = config.get("model_name") or "model"
        self.media = MediaConfig.model_validate(config.get("media") or {})
        self.model: Any = None
        self.context: Context | None = None

    def load(self) -> None:
        """``model_fn(model_dir[, context])``, or the toolkit's default loader."""
        model_dir = type(self).model_dir()
        self.context = Context(self.name, model_dir, gpu_id=gpu_id())
        model_fn = self.handlers.model_fn
        if model_fn is not None:
            self.model = model_fn(model_dir, context=self.context)
        else:
            self.model = default_model_fn(model_dir)

    # the three steps -------------------------------------------------------------------------
    def preprocess(self, request: Any, context: RequestContext) -> Staged:
        """Decode the body: ``input_fn`` or the default decoder (nothing with transform_fn)."""
        inv = request if isinstance(request, Invocation) else _from_json(request, context)
        assert self.context is not None
        staged = Staged(inv, self.context.for_request(inv.headers, context.request_id))
        if self.handlers.transform_fn is None:
            body = _text(inv)
            fn = self.handlers.input_fn
            if fn is not None:
                staged.data = _guard(
                    context, lambda: fn(body, inv.content_type, context=staged.context)
                )
            else:
                staged.data = _guard(
                    context, lambda: codec.decode(body, inv.content_type, self.media)
                )
        return staged

    def predict(self, staged: Any, context: RequestContext) -> Staged:
        """``predict_fn`` (or ``model(inputs, **parameters)``), or the whole ``transform_fn``."""
        inv, mms = staged.invocation, staged.context
        transform = self.handlers.transform_fn
        predict = self.handlers.predict_fn
        if transform is not None:
            body = _text(inv)
            work = lambda: transform(self.model, body, inv.content_type, inv.accept, context=mms)  # noqa: E731
        elif predict is not None:
            work = lambda: predict(staged.data, self.model, context=mms)  # noqa: E731
        else:
            work = lambda: default_predict_fn(staged.data, self.model)  # noqa: E731
        token = current_request.set(context)
        try:
            staged.data = _guard(context, work)
        finally:
            current_request.reset(token)
        return staged

    def postprocess(self, staged: Any, context: RequestContext) -> Reply:
        """``output_fn`` or the default encoder; the reply carries what the handler set."""
        inv, mms = staged.invocation, staged.context
        if self.handlers.transform_fn is not None:
            out = staged.data
        elif (fn := self.handlers.output_fn) is not None:
            out = _guard(context, lambda: fn(staged.data, inv.accept, context=mms))
        else:
            out = _guard(context, lambda: codec.encode(staged.data, inv.accept))
        status, _ = mms.get_response_status(0)
        return Reply(_bytes(out), inv.accept, status, mms.get_response_headers(0))


def _from_json(payload: Any, context: RequestContext) -> Invocation:
    """A request from impasto's own routes (already parsed JSON) as an invocation."""
    body = json.dumps(payload).encode()
    accept = codec.accept_type(context.output.accept)
    headers = Headers([("Content-Type", codec.JSON), ("Accept", accept)])
    return Invocation(body, codec.JSON, accept, headers)


def _text(inv: Invocation) -> str | bytearray:
    """The body as the toolkit hands it over: text for JSON and CSV, else a bytearray."""
    if codec.base_type(inv.content_type) in codec.UTF8_TYPES:
        return inv.body.decode("utf-8")
    return bytearray(inv.body)


def _bytes(out: Any) -> bytes:
    """A handler's result as the model server writes it."""
    if out is None:
        return b""
    if isinstance(out, str):
        return out.encode("utf-8")
    if isinstance(out, bytes | bytearray | memoryview):
        return bytes(out)
    try:
        return json.dumps(out, indent=2).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ImpastoError(
            f"the handler returned a {type(out).__name__}, which cannot be written as a "
            f"response body ({exc}); return str, bytes or JSON data"
        ) from None


def _guard(context: RequestContext, work: Callable[[], Any]) -> Any:
    """Run handler code: its exceptions become the toolkit's 400, logged with the traceback;
    a cancellation (deadline, client gone, shutdown) keeps its own error."""
    try:
        return work()
    except ImpastoError as exc:
        if context.cancelled:
            raise
        _log(context, exc)
        raise HandlerFailed(exc.message) from exc
    except Exception as exc:
        if context.cancelled:
            raise context.error() from exc
        _log(context, exc)
        raise HandlerFailed(str(exc)) from exc


def _log(context: RequestContext, exc: BaseException) -> None:
    log.error(
        "request %s: handler raised %s: %s\n%s",
        context.request_id,
        type(exc).__name__,
        exc,
        "".join(traceback.format_exception(exc)),
    )
