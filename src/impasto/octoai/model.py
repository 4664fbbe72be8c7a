"""An OctoAI-style service as an impasto model.

The service class is built with no arguments when the model loads, ``setup()`` runs once
before the first request (readiness follows it), and each request calls ``infer(**fields)``.
``infer``'s signature is the schema: one input field per parameter (its annotation and
default; a parameter without a default is required, so a missing one is a 422 instead of the
SDK's ``None``), and ``{"output": <return annotation>, "analytics": {...}}`` out, where
``inference_time_ms`` is the process CPU time and ``performance_time_ms`` the wall time of
the call, as the SDK reports them.
"""

from __future__ import annotations

import inspect
import time
import typing
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, create_model

from ..config import MediaConfig
from ..context import RequestContext
from ..errors import PackageError
from .sdk import media_policy


class ResponseAnalytics(BaseModel):
    """How long ``infer`` took: process CPU time and wall time, in milliseconds."""

    inference_time_ms: float
    performance_time_ms: float


class OctoAIModel:
    """Serves one OctoAI-style service class; :func:`model_class_for` makes the subclass."""

    impasto_kind: ClassVar[str] = "octoai"
    service_class: ClassVar[type]
    impasto_scope: ClassVar[Callable[[], Any]]  # the octoai modules while serving

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.media = MediaConfig.model_validate((config or {}).get("media") or {})
        with media_policy(self.media):
            self.service = self.service_class()

    def load(self) -> None:
        with media_policy(self.media):
            self.service.setup()

    def run(self, input: BaseModel) -> tuple[Any, ResponseAnalytics]:
        fields = {name: getattr(input, name) for name in type(input).model_fields}
        cpu, wall = time.process_time_ns(), time.perf_counter_ns()
        with media_policy(self.media):
            output = self.service.infer(**fields)
        analytics = ResponseAnalytics(
            inference_time_ms=(time.process_time_ns() - cpu) / 1e6,
            performance_time_ms=(time.perf_counter_ns() - wall) / 1e6,
        )
        return output, analytics


def infer_schemas(cls: type) -> tuple[type[BaseModel], type[BaseModel]]:
    """``Input`` (one field per ``infer`` parameter) and ``Output`` (``output`` and
    ``analytics``) models of a service class; a missing annotation is a start-up error."""
    infer = getattr(cls, "infer", None)
    if not callable(infer):
        raise PackageError(f"{cls.__name__} has no infer() method")
    where = f"{cls.__name__}.infer{inspect.signature(infer)}"
    try:
        hints = typing.get_type_hints(infer)
    except Exception as exc:
        raise PackageError(f"{where}: cannot resolve its annotations: {exc}") from None
    params = [
        p
        for p in list(inspect.signature(infer).parameters.values())[1:]  # self
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if not params:
        raise PackageError(f"{where}: infer() must take at least one argument")
    unannotated = [p.name for p in params if p.name not in hints]
    if unannotated:
        raise PackageError(
            f"{where}: infer() requires type annotations for args ({', '.join(unannotated)})"
        )
    if "return" not in hints:
        raise PackageError(f"{where}: infer() requires a return type annotation")
    fields: dict[str, Any] = {
        p.name: (hints[p.name], ... if p.default is inspect.Parameter.empty else p.default)
        for p in params
    }
    config = ConfigDict(extra="ignore", arbitrary_types_allowed=True)
    try:
        input_model = create_model("Input", __config__=config, **fields)
        output_model = create_model(
            "Output",
            __config__=ConfigDict(arbitrary_types_allowed=True),
            output=(hints["return"] | None, None),
            analytics=(ResponseAnalytics, ...),
        )
    except Exception as exc:
        raise PackageError(f"{where}: cannot build its input and output schemas: {exc}") from None
    return input_model, output_model


def model_class_for(service_class: type, scope: Callable[[], Any]) -> type[OctoAIModel]:
    """An :class:`OctoAIModel` subclass for ``service_class`` whose one endpoint takes the
    ``Input`` model and returns the ``Output`` model (impasto's ``/predict``; the OctoAI
    routes are ``/infer``, :mod:`impasto.server.adapters.octoai`)."""
    input_model, output_model = infer_schemas(service_class)

    def predict(self: OctoAIModel, input: Any, context: RequestContext) -> Any:
        output, analytics = self.run(input)
        return output_model.model_construct(output=output, analytics=analytics)

    predict.__annotations__ = {
        "input": input_model,
        "context": RequestContext,
        "return": output_model,
    }
    predict.__doc__ = inspect.getdoc(service_class.infer) or inspect.getdoc(service_class)
    namespace = {
        "__module__": OctoAIModel.__module__,
        "__qualname__": service_class.__qualname__,
        "__doc__": inspect.getdoc(service_class),
        "service_class": service_class,
        "impasto_scope": staticmethod(scope),
        "predict": predict,
    }
    return type(service_class.__name__, (OctoAIModel,), namespace)
