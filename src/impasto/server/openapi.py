"""The OpenAPI document, built from the endpoint descriptions (never from the user's class)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from ..runner import Runner
from ..spec import EndpointSpec

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


def schema_of(model: type[BaseModel] | None, defs: dict[str, Any] | None = None) -> Any:
    """A model's JSON schema with its ``$defs`` hoisted into ``defs`` (None: any JSON)."""
    if model is None:
        return {}
    try:
        schema = model.model_json_schema(ref_template=_REF)
    except Exception:  # outputs holding arbitrary objects have no JSON schema
        return {"type": "object", "title": model.__name__}
    for name, sub in schema.pop("$defs", {}).items():
        if defs is not None:
            defs[name] = sub
    if defs is not None:
        defs[model.__name__] = schema
        return {"$ref": _REF.format(model=model.__name__)}
    return schema


def _multipart(schema: dict[str, Any]) -> bool:
    """Whether the input has binary (media) fields, so a multipart body makes sense."""
    return "binary" in repr(schema)


def _operation(ep: EndpointSpec, defs: dict[str, Any], model_name: str) -> dict[str, Any]:
    body_schema = schema_of(ep.input_model, defs)
    content: dict[str, Any] = {"application/json": {"schema": body_schema}}
    if ep.input_model is not None and _multipart(defs.get(ep.input_model.__name__, {})):
        content["multipart/form-data"] = {"schema": body_schema}
    ok: dict[str, Any] = {"application/json": {"schema": schema_of(ep.output_model, defs)}}
    if ep.streams:
        ok = {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "text/event-stream": {"schema": {"type": "string"}},
        }
    errors = {
        str(code): {"description": text, "content": {"application/json": {"schema": _ERROR}}}
        for code, text in (
            (400, "Malformed body"),
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


def build_openapi(runner: Runner, model_name: str, version: str) -> dict[str, Any]:
    defs: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    default = runner.spec.default_endpoint
    for ep in runner.spec.endpoints.values():
        op = _operation(ep, defs, model_name)
        paths.setdefault(ep.route, {})["post"] = op
        if ep is default and ep.route != "/predict":
            paths["/predict"] = {"post": {**op, "operationId": "predict"}}
    for path, summary in (
        ("/health/live", "Liveness: 200 while the process runs"),
        ("/health/ready", "Readiness: 200 once the model is loaded, else 503"),
    ):
        paths[path] = {"get": {"summary": summary, "responses": {"200": {"description": "OK"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": model_name, "version": version, "description": "Served by impasto."},
        "paths": paths,
        "components": {"schemas": defs},
    }


DOCS_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title} - impasto</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
</head><body><div id="swagger-ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({{url: "/openapi.json", dom_id: "#swagger-ui"}});</script>
</body></html>
"""
