"""Talking to a SageMaker-contract server in the tests: httpx bodies, boto3's client, the
toolkit's error envelope."""

from __future__ import annotations

import io
import json

import boto3
import httpx
from botocore.config import Config
from PIL import Image

PROMPT = {"inputs": "a fox", "parameters": {"num_inference_steps": 2}}


def runtime(server):
    """boto3's sagemaker-runtime client pointed at the local server (dummy credentials)."""
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(retries={"max_attempts": 1}, read_timeout=120),
    )


def png(size=(64, 64), mode="RGB", color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else (*color, 128)).save(buf, format="PNG")
    return buf.getvalue()


def image(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def post(server, body, *, content_type="application/json", **headers):
    content = json.dumps(body).encode() if isinstance(body, dict) else body
    return server.client.post(
        "/invocations", content=content, headers={"Content-Type": content_type, **headers}
    )


def toolkit_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["code"] == status
    assert r.text.startswith('{\n  "code"')  # indented as the model server writes it
    if status == 400:
        assert body["type"] == "InternalServerException"
    return body["message"]
