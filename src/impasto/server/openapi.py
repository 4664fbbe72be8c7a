"""The OpenAPI document, built from the endpoint descriptions (never from the user's class)."""

from __future__ import annotations

import importlib.util
import itertools
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from ..media import media_kind
from ..spec import EndpointSpec
from .registry import Models

_REF = "#/components/schemas/{model}"
_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": ["string", "null"]},
            },
            "required": ["type", "message"],
        }
    },
}


def schema_of(
    model: type[BaseModel] | None,
    defs: dict[str, Any] | None = None,
    mode: JsonSchemaMode = "validation",
) -> Any:
    """A model's JSON schema with its ``$defs`` hoisted into ``defs`` (None: any JSON).

    ``mode="serialization"`` is the schema of an output: media fields there are the encoded
    object a JSON response carries, not the binary string an input takes.
    """
    if model is None:
        return {}
    try:
        schema = model.model_json_schema(ref_template=_REF, mode=mode)
    except Exception:  # outputs holding arbitrary objects have no JSON schema
        return {"type": "object", "title": model.__name__}
    if defs is None:
        return schema
    suffix = "Output" if mode == "serialization" else "Input"
    names = {n: _def_name(n, sub, defs, suffix) for n, sub in schema.get("$defs", {}).items()}
    name = _def_name(model.__name__, schema, defs, suffix)
    if any(old != new for old, new in names.items()):  # a name clash between modes: rename
        schema = _rename_refs(schema, names)
    for old, sub in schema.pop("$defs", {}).items():
        defs[names[old]] = sub
    defs[name] = schema
    return {"$ref": _REF.format(model=name)}


def _def_name(name: str, schema: dict[str, Any], defs: dict[str, Any], suffix: str) -> str:
    """``name``, else the first of ``name`` + ``suffix`` (+ 2, 3...) that ``defs`` does not
    hold another schema under: a model used as an input and as an output (its media fields
    differ between the two), or two models of one name."""
    more = (f"{name}{suffix}{i}" for i in itertools.count(2))
    return next(
        candidate
        for candidate in itertools.chain([name, name + suffix], more)
        if candidate not in defs or _without_defs(defs[candidate]) == _without_defs(schema)
    )


def _without_defs(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k != "$defs"}


def _rename_refs(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {k: _rename_refs(v, names) for k, v in value.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF.format(model="")):
            old = ref.rsplit("/", 1)[1]
            out["$ref"] = _REF.format(model=names.get(old, old))
        return out
    if isinstance(value, list):
        return [_rename_refs(v, names) for v in value]
    return value


def _has_binary(schema: Any, defs: dict[str, Any], seen: set[str] | None = None) -> bool:
    """Whether a schema (following its refs into ``defs``) has a binary (media) field."""
    seen = set() if seen is None else seen
    if isinstance(schema, dict):
        if schema.get("format") == "binary":
            return True
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref not in seen:
            seen.add(ref)
            if _has_binary(defs.get(ref.rsplit("/", 1)[1]), defs, seen):
                return True
        return any(_has_binary(v, defs, seen) for v in schema.values())
    if isinstance(schema, list):
        return any(_has_binary(v, defs, seen) for v in schema)
    return False


_RAW_TYPES = {
    "image": ("image/png", "image/jpeg", "image/webp"),
    "video": ("video/mp4", "image/gif", "image/webp"),
}


def _media_outputs(model: Any) -> dict[str, bool]:
    """The media kinds an output model's fields hold, each with whether it may hold several."""
    found: dict[str, bool] = {}
    for info in getattr(model, "model_fields", {}).values():
        kind = media_kind(info.annotation)
        if kind is not None:
            many = typing.get_origin(info.annotation) in (list, tuple)
            found[kind] = found.get(kind, False) or many
    return found


def _operation(ep: EndpointSpec, defs: dict[str, Any], model_name: str) -> dict[str, Any]:
    body_schema = schema_of(ep.input_model, defs)
    content: dict[str, Any] = {"application/json": {"schema": body_schema}}
    if _has_binary(body_schema, defs):  # media fields: files may come as multipart parts
        content["multipart/form-data"] = {"schema": body_schema}
    output = schema_of(ep.output_model, defs, mode="serialization")
    ok: dict[str, Any] = {"application/json": {"schema": output}}
    binary = {"schema": {"type": "string", "format": "binary"}}
    kinds = _media_outputs(ep.output_model)
    for kind, many in kinds.items():  # one media output comes raw when Accept asks for it
        for media_type in _RAW_TYPES.get(kind, ()):
            ok[media_type] = {**binary, "description": f"The {kind} itself (Accept: {media_type})"}
        if many:
            ok["multipart/mixed"] = {**binary, "description": "Every media output, one part each"}
    ok["text/event-stream"] = {
        "schema": {"type": "string"},
        "description": "progress, preview and log events, then result (or error)",
    }
    if ep.streams:
        ok = {
            "application/octet-stream": binary,
            "text/event-stream": {"schema": {"type": "string"}},
        }
    errors = {
        str(code): {"description": text, "content": {"application/json": {"schema": _ERROR}}}
        for code, text in (
            (400, "Malformed body"),
            (406, "Accept asks for what this result cannot be"),
            (413, "Too large"),
            (422, "Invalid input (the field is named)"),
            (429, "Queue full; retry after Retry-After"),
            (500, "The model raised"),
            (503, "Model not ready"),
            (504, "Deadline passed"),
        )
    }
    return {
        "summary": ep.name,
        "description": ep.description or f"Run the `{ep.name}` endpoint of {model_name}.",
        "operationId": ep.name,
        "requestBody": {"required": True, "content": content},
        "responses": {"200": {"description": "The model output", "content": ok}, **errors},
    }


def build_openapi(models: Models, title: str, version: str) -> dict[str, Any]:
    """The document for every served model: the default model's endpoints at their own
    routes and ``/predict``, every model's at ``/v1/models/<name>/<endpoint>``."""
    defs: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for runner in models:
        default = runner.spec.default_endpoint
        for ep in runner.spec.endpoints.values():
            op = _operation(ep, defs, runner.name)
            if runner is models.default:
                paths.setdefault(ep.route, {})["post"] = op
                if ep is default and ep.route != "/predict":
                    paths["/predict"] = {"post": {**op, "operationId": "predict"}}
            if len(models) > 1:
                named = {**op, "operationId": f"{runner.name}_{ep.name}"}
                paths[f"/v1/models/{runner.name}/{ep.name}"] = {"post": named}
    for path, summary in (
        ("/health/live", "Liveness: 200 while the process runs"),
        ("/health/ready", "Readiness: 200 once every model is loaded, else 503"),
    ):
        paths[path] = {"get": {"summary": summary, "responses": {"200": {"description": "OK"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": "Served by impasto."},
        "paths": paths,
        "components": {"schemas": defs},
    }


DOCS_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title} - impasto</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head><body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({{url: "/openapi.json", dom_id: "#swagger-ui", validatorUrl: null}});</script>
</body></html>
"""


def docs_assets() -> Path:
    """Swagger UI's files, shipped in the ``swagger-ui-py`` package: /docs works offline."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is missing: pip install impasto (it is a dependency)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"
