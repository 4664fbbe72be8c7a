"""What the playground shows, read from endpoint descriptions (JSON schema), never from code.

The same reading serves the playground mounted in a server (schemas built from its
registry) and ``impasto ui --url`` (schemas read from a remote ``/openapi.json``): a
:class:`ModelView` per model, an :class:`EndpointView` per endpoint, a :class:`FieldView`
per input field saying which widget fits it. No model has UI code of its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal[
    "prompt",  # a multi-line text area
    "text",
    "integer",
    "number",
    "slider",
    "choice",
    "bool",
    "seed",
    "image",
    "mask",  # painted with a brush over the endpoint's image field
    "video",
    "audio",
    "file",
    "files",  # a list of media
    "json",  # objects, lists and anything else: JSON text
]
MEDIA_KINDS = ("image", "mask", "video", "audio", "file", "files")
MAX_SLIDER_SPAN = 100_000  # wider integer ranges get a number box
MAIN_FIELDS_WHEN_FEW = 6  # an endpoint with this many fields or fewer shows them all

_MEDIA_BY_TYPE = {"image": "image", "video": "video", "audio": "audio"}
_REF = "#/components/schemas/"


@dataclass(frozen=True)
class FieldView:
    """One input field and the widget it gets."""

    name: str
    kind: Kind
    label: str
    description: str = ""
    required: bool = False
    default: Any = None
    nullable: bool = False
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] = ()
    advanced: bool = False
    featured: bool = False  # the schema gives examples: worth keeping in view
    integer: bool = False

    @property
    def media(self) -> bool:
        return self.kind in MEDIA_KINDS


@dataclass(frozen=True)
class EndpointView:
    """One endpoint of one model: where to call it and what to ask for."""

    model: str
    endpoint: str
    path: str  # the route on the server (impasto's own API)
    description: str = ""
    fields: tuple[FieldView, ...] = ()
    raw: bool = False  # no input schema: the body is any JSON, edited as text
    streams: bool = False

    @property
    def key(self) -> str:
        return f"{self.model}/{self.endpoint}"

    def field(self, name: str) -> FieldView | None:
        return next((f for f in self.fields if f.name == name), None)

    @property
    def mask_pair(self) -> tuple[FieldView, FieldView] | None:
        """(image, mask) when a mask is painted over the endpoint's image."""
        mask = next((f for f in self.fields if f.kind == "mask"), None)
        image = self.field("image") or next((f for f in self.fields if f.kind == "image"), None)
        return (image, mask) if mask is not None and image is not None else None


@dataclass(frozen=True)
class ModelView:
    name: str
    endpoints: tuple[EndpointView, ...] = field(default_factory=tuple)


# reading schemas -----------------------------------------------------------------------------
def endpoint_view(
    model: str,
    endpoint: str,
    path: str,
    schema: Any,
    defs: dict[str, Any] | None = None,
    *,
    description: str = "",
    streams: bool = False,
) -> EndpointView:
    """The view of one endpoint from its input schema (``$ref`` resolved against ``defs``)."""
    defs = defs or {}
    schema = _resolve(schema, defs)
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not props:
        return EndpointView(model, endpoint, path, description, (), raw=True, streams=streams)
    required = set(schema.get("required", ()))
    fields = [
        field_view(name, _resolve(sub, defs), name in required, defs) for name, sub in props.items()
    ]
    fields = _pair_masks(fields)
    if len(fields) > MAIN_FIELDS_WHEN_FEW:
        fields = [_place(f) for f in fields]
    return EndpointView(model, endpoint, path, description, tuple(fields), streams=streams)


def field_view(
    name: str, schema: dict[str, Any], required: bool, defs: dict[str, Any]
) -> FieldView:
    """The widget for one field, from its JSON schema."""
    options, nullable = _options(schema, defs)
    base: dict[str, Any] = {
        "name": name,
        "label": schema.get("title") or name.replace("_", " ").capitalize(),
        "description": schema.get("description", ""),
        "required": required,
        "default": schema.get("default"),
        "nullable": nullable,
        "featured": bool(schema.get("examples")),
    }
    merged = _merge(options)
    enum = _enum(options)
    if enum:
        return FieldView(kind="choice", choices=tuple(enum), **base)
    kind = merged.get("type")
    media = _media(merged, defs)
    if media:
        return FieldView(kind=media, **base)  # type: ignore[arg-type]
    if kind in ("integer", "number"):
        return _numeric(name, merged, kind, base)
    if kind == "boolean":
        return FieldView(kind="bool", **base)
    if kind == "string":
        long = "prompt" in name or (merged.get("maxLength") or 0) > 200
        return FieldView(kind="prompt" if long else "text", **base)
    return FieldView(kind="json", **base)


def _numeric(name: str, schema: dict[str, Any], kind: str, base: dict[str, Any]) -> FieldView:
    integer = kind == "integer"
    low = schema.get("minimum")
    high = schema.get("maximum")
    step = schema.get("multipleOf") or (1 if integer else None)
    if name == "seed" and integer:
        return FieldView(kind="seed", minimum=low, maximum=high, step=1, integer=True, **base)
    open_low = schema.get("exclusiveMinimum") if low is None else None
    open_high = schema.get("exclusiveMaximum") if high is None else None
    lo = low if low is not None else open_low
    hi = high if high is not None else open_high
    if step is None and lo is not None and hi is not None:
        step = _nice_step(hi - lo)
    if open_low is not None:
        low = open_low + (step or 1)
    if open_high is not None:
        high = open_high - (step or 1)
    if low is not None and step and integer and low % step:
        low = math.ceil(low / step) * step  # a slider's values are low + k * step
    bounded = low is not None and high is not None and 0 < high - low <= MAX_SLIDER_SPAN
    slider = bounded and not (base["nullable"] and base["default"] is None)
    return FieldView(
        kind="slider" if slider else ("integer" if integer else "number"),
        minimum=low,
        maximum=high,
        step=step,
        integer=integer,
        **base,
    )


def _nice_step(span: float) -> float:
    """A round step giving about a hundred positions over ``span``."""
    if span <= 0:
        return 1.0
    return float(10 ** math.floor(math.log10(span / 100))) if span >= 1e-6 else span


def _resolve(schema: Any, defs: dict[str, Any], depth: int = 0) -> Any:
    if isinstance(schema, dict) and "$ref" in schema and depth < 16:
        ref = schema["$ref"]
        name = ref.rsplit("/", 1)[1] if isinstance(ref, str) else ""
        target = defs.get(name, {})
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        return {**_resolve(target, defs, depth + 1), **rest}
    return schema


def _options(schema: dict[str, Any], defs: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """The alternatives of a field (``anyOf``/``oneOf``) without ``null``, and if null is one."""
    alts = schema.get("anyOf") or schema.get("oneOf")
    if not alts:
        kind = schema.get("type")
        if isinstance(kind, list):
            kinds = [k for k in kind if k != "null"]
            single = {**schema, "type": kinds[0] if len(kinds) == 1 else kinds}
            return [single], "null" in kind
        return [schema], False
    options = [_resolve(a, defs) for a in alts]
    real = [o for o in options if o.get("type") != "null"]
    outer = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
    return [{**o, **{k: v for k, v in outer.items() if k not in o}} for o in real], len(real) < len(
        options
    )


def _merge(options: list[dict[str, Any]]) -> dict[str, Any]:
    return options[0] if len(options) == 1 else {}


def _enum(options: Iterable[dict[str, Any]]) -> list[Any]:
    values: list[Any] = []
    for option in options:
        if "enum" in option:
            values.extend(option["enum"])
        elif "const" in option:
            values.append(option["const"])
        else:
            return []
    return values


def _media(schema: dict[str, Any], defs: dict[str, Any]) -> Kind | None:
    if schema.get("type") == "array":
        item = _resolve(schema.get("items", {}), defs)
        return "files" if isinstance(item, dict) and _media(item, defs) else None
    if schema.get("type") != "string" or schema.get("format") != "binary":
        return None
    major = str(schema.get("contentMediaType", "")).split("/", 1)[0]
    return _MEDIA_BY_TYPE.get(major, "file")  # type: ignore[return-value]


def _pair_masks(fields: list[FieldView]) -> list[FieldView]:
    """An image field called ``mask`` (or ``*_mask``) beside another image is painted."""
    images = [f for f in fields if f.kind == "image"]
    if len(images) < 2:
        return fields
    return [_with(f, kind="mask") if f.kind == "image" and _is_mask(f.name) else f for f in fields]


def _is_mask(name: str) -> bool:
    return name == "mask" or name.endswith("_mask")


_MAIN_NAMES = ("prompt", "negative_prompt")


def _place(f: FieldView) -> FieldView:
    """Required fields, media, prompts, the seed and fields with examples stay in view; the
    rest of a long form goes in the advanced section."""
    main = f.required or f.featured or f.media or f.kind == "seed" or f.name in _MAIN_NAMES
    return f if main else _with(f, advanced=True)


def _with(f: FieldView, **changes: Any) -> FieldView:
    from dataclasses import replace

    return replace(f, **changes)


# whole documents -----------------------------------------------------------------------------
def views_from_openapi(doc: dict[str, Any]) -> list[ModelView]:
    """Every model and endpoint of an impasto server, from its ``/openapi.json``.

    With several models the document has ``/v1/models/<name>/<endpoint>`` for each; with one,
    its endpoints sit at their own routes (``/predict`` repeats the default one) and the
    model's name is the document's title."""
    defs = doc.get("components", {}).get("schemas", {})
    paths = doc.get("paths", {})
    by_model: dict[str, list[EndpointView]] = {}
    named = [p for p in paths if p.startswith("/v1/models/") and p.count("/") == 4]
    if named:
        for path in named:
            _, _, _, model, endpoint = path.split("/")
            view = _from_operation(model, endpoint, path, paths[path].get("post"), defs)
            if view is not None:
                by_model.setdefault(model, []).append(view)
        return [ModelView(m, tuple(eps)) for m, eps in by_model.items()]
    model = doc.get("info", {}).get("title", "model")
    seen: set[str] = set()
    views = []
    ops = [(p, item.get("post")) for p, item in paths.items() if isinstance(item, dict)]
    ops.sort(key=lambda po: po[0] == "/predict")  # the endpoint's own route first
    for path, op in ops:
        if not op:
            continue
        name = op.get("summary") or path.strip("/")
        if name in seen:
            continue
        view = _from_operation(model, name, path, op, defs)
        if view is not None:
            seen.add(name)
            views.append(view)
    order = {p: i for i, p in enumerate(paths)}
    views.sort(key=lambda v: order.get(v.path, 0))
    return [ModelView(model, tuple(views))]


def _from_operation(
    model: str, endpoint: str, path: str, op: Any, defs: dict[str, Any]
) -> EndpointView | None:
    if not isinstance(op, dict):
        return None
    content = op.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema", {})
    ok = op.get("responses", {}).get("200", {}).get("content", {})
    streams = "application/octet-stream" in ok and "application/json" not in ok
    return endpoint_view(
        model,
        endpoint,
        path,
        schema,
        defs,
        description=op.get("description", ""),
        streams=streams,
    )


def endpoint_path(model: str, endpoint: str, route: str, default_model: bool, several: bool) -> str:
    """Where impasto's own API serves an endpoint: its route for the default model, else
    ``/v1/models/<model>/<endpoint>``."""
    if default_model or not several:
        return route
    return f"/v1/models/{model}/{endpoint}"
