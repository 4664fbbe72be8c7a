"""The request the playground just made, as a ``curl`` command and a Python snippet for
impasto's own API, so the page teaches the API: what runs here runs from a terminal."""

from __future__ import annotations

import json
import pprint
import shlex
from dataclasses import dataclass
from typing import Any

KEY_ENV = "IMPASTO_API_KEY"


@dataclass(frozen=True)
class Upload:
    """A media input as the user gave it: a file name for the snippets, the bytes to send."""

    filename: str
    data: bytes
    content_type: str = "application/octet-stream"


def _media(payload: dict[str, Any]) -> dict[str, Upload]:
    return {k: v for k, v in payload.items() if isinstance(v, Upload)}


def _form_value(value: Any) -> str:
    """A form field's text: impasto decodes JSON text that starts with ``"``, ``{`` or ``[``."""
    if isinstance(value, str):
        return json.dumps(value) if value[:1] in ('"', "{", "[") else value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def curl_command(base_url: str, path: str, payload: Any, *, api_key: bool = False) -> str:
    """A ``curl`` command sending ``payload`` (media as multipart file parts)."""
    url = base_url.rstrip("/") + path
    lines = [f"curl -s {shlex.quote(url)}"]
    if api_key:
        lines.append(f'-H "Authorization: Bearer ${KEY_ENV}"')
    media = _media(payload) if isinstance(payload, dict) else {}
    if media:
        for name, value in payload.items():
            if isinstance(value, Upload):
                lines.append(f"-F {shlex.quote(f'{name}=@{value.filename}')}")
            else:
                lines.append(f"-F {shlex.quote(f'{name}={_form_value(value)}')}")
    else:
        lines.append("-H 'Content-Type: application/json'")
        lines.append(f"-d {shlex.quote(json.dumps(payload))}")
    return " \\\n  ".join(lines)


def python_snippet(base_url: str, path: str, payload: Any, *, api_key: bool = False) -> str:
    """The same request with httpx (media as multipart file parts)."""
    url = base_url.rstrip("/") + path
    media = _media(payload) if isinstance(payload, dict) else {}
    out = ["import httpx"]
    if api_key:
        out.insert(0, "import os")
    out.append("")
    args = [f"    {url!r},"]
    if media:
        data = {k: _form_value(v) for k, v in payload.items() if not isinstance(v, Upload)}
        files = ", ".join(f"{k!r}: open({v.filename!r}, 'rb')" for k, v in media.items())
        args.append(f"    data={_py(data)},")
        args.append(f"    files={{{files}}},")
    else:
        args.append(f"    json={_py(payload)},")
    if api_key:
        args.append(f'    headers={{"Authorization": "Bearer " + os.environ["{KEY_ENV}"]}},')
    args.append("    timeout=600,")
    out += ["response = httpx.post(", *args, ")", "response.raise_for_status()"]
    out.append("result = response.json()  # media come as base64 in 'data'")
    return "\n".join(out)


def _py(value: Any) -> str:
    """A Python literal for JSON data, indented to sit inside the call."""
    return pprint.pformat(value, width=88, sort_dicts=False).replace("\n", "\n    ")
