"""What protocol adapters ask of an endpoint's schema: its fields, their defaults and bounds,
which endpoint does a task, and where the images of a result are.

Protocols name things their own way (OpenAI's ``n``, a tensor called ``prompt``, KServe's
``instances``); these helpers map those names onto the endpoint's input fields by reading
its frozen :class:`~impasto.spec.EndpointSpec`, never by calling the model.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic.fields import FieldInfo

from ...media import find_media, media_kind
from ...runner import Runner
from ...spec import EndpointSpec

# The inputs each generic image task needs (the zero-code diffusers endpoints are named so).
TASK_FIELDS = {"text2img": ("prompt",), "img2img": ("image",), "inpaint": ("image", "mask")}


def fields_of(endpoint: EndpointSpec) -> dict[str, FieldInfo] | None:
    """The endpoint's input fields by the name clients send (None: it takes any JSON)."""
    model = endpoint.input_model
    if model is None:
        return None
    return {info.alias or name: info for name, info in model.model_fields.items()}


def has(endpoint: EndpointSpec, name: str) -> bool:
    fields = fields_of(endpoint)
    return fields is None or name in fields


def required(endpoint: EndpointSpec) -> list[str]:
    fields = fields_of(endpoint) or {}
    return [name for name, info in fields.items() if info.is_required()]


def default(endpoint: EndpointSpec, name: str) -> Any:
    info = (fields_of(endpoint) or {}).get(name)
    return (
        None if info is None or info.is_required() else info.get_default(call_default_factory=True)
    )


def upper_bound(endpoint: EndpointSpec, name: str) -> float | None:
    """The field's ``le``/``lt`` bound, if it has one."""
    info = (fields_of(endpoint) or {}).get(name)
    for meta in info.metadata if info is not None else ():
        for attr in ("le", "lt"):
            value = getattr(meta, attr, None)
            if value is not None:
                return value
    return None


def task_endpoint(runner: Runner, task: str) -> EndpointSpec | None:
    """The endpoint that does ``task`` (``text2img``, ``img2img``, ``inpaint``): the one
    named so, else the first (the default first) whose inputs fit; text2img falls back to
    the default endpoint."""
    endpoints = runner.spec.endpoints
    if task in endpoints:
        return endpoints[task]
    first = runner.spec.default_endpoint
    for ep in (first, *(e for e in endpoints.values() if e is not first)):
        fields = fields_of(ep)
        if fields is None:
            continue
        if not all(name in fields for name in TASK_FIELDS[task]):
            continue
        if task == "text2img" and any(takes_media(fields[n]) for n in required(ep)):
            continue
        if task == "img2img" and "mask" in required(ep):
            continue
        return ep
    return first if task == "text2img" else None


def takes_media(info: FieldInfo) -> bool:
    """Whether a field decodes media (``Image["RGB"]`` keeps its marker in the metadata)."""
    return media_kind(info.annotation) is not None or any(
        media_kind(meta) is not None for meta in info.metadata
    )


def media_field(endpoint: EndpointSpec, name: str) -> bool:
    info = (fields_of(endpoint) or {}).get(name)
    return info is not None and takes_media(info)


def is_list_field(endpoint: EndpointSpec, name: str) -> bool:
    info = (fields_of(endpoint) or {}).get(name)
    return info is not None and _is_list(info.annotation)


def _is_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _is_list(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_is_list(a) for a in typing.get_args(annotation) if a is not type(None))
    return (origin or annotation) in (list, tuple, set, frozenset)


def images_of(result: Any) -> list[Any]:
    """The media values of a result, in order (an ImageResult's ``images``...)."""
    return find_media(result)


def returns_media(endpoint: EndpointSpec) -> bool | None:
    """Whether the endpoint's declared output holds media (None: it declares none)."""
    model = endpoint.output_model
    if model is None:
        return None
    return any(takes_media(info) for info in model.model_fields.values())
