"""SageMaker asynchronous inference: ``POST /endpoints/{name}/async-invocations`` (the path
``boto3``'s ``invoke_endpoint_async`` sends to) and ``POST /async-invocations``.

The request names its input (``X-Amzn-SageMaker-InputLocation``: ``s3://`` or ``file://``
under ``sagemaker.async_input_locations``) or carries it inline (up to
``sagemaker.async_max_body_bytes``), with its types in ``X-Amzn-SageMaker-Content-Type`` and
``-Accept``. It is answered 202 once the job is committed, with
``X-Amzn-SageMaker-OutputLocation`` (``<output path>[/<S3OutputPathExtension>]/<id>.out``, or
``X-Amzn-SageMaker-Filename``), ``X-Amzn-SageMaker-FailureLocation`` and
``{"InferenceId"}``. The job runs as ``/invocations`` would run it (the same dialect for the
model's kind); the reply goes to the output location, an error body to the failure
location, and an SNS-shaped notification to ``sagemaker.async_notification_url``.
``RequestTTLSeconds`` bounds its wait in the queue, ``InvocationTimeoutSeconds`` its run.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..config import SageMakerConfig
from ..errors import ImpastoError, InputError, NotFound, Overloaded, PayloadTooLarge
from ..runner import Runner
from ..server.adapters.sagemaker import custom_attributes
from ..server.requests import header, read_body
from .records import NewJob

if TYPE_CHECKING:
    from .service import Jobs

_PREFIX = "x-amzn-sagemaker-"
DEFAULT_TTL_S = 21600


class SageMakerJobs:
    """The async-invocation routes (see the module docstring)."""

    def __init__(self, jobs: Jobs, config: SageMakerConfig, home: Path) -> None:
        self.jobs = jobs
        self.config = config
        self.output_path = config.async_output_path or (home / "async" / "output").as_uri()
        self.failure_path = config.async_failure_path or (home / "async" / "failure").as_uri()
        self.inputs = config.async_input_locations or [
            "s3://",
            (home / "async" / "input").as_uri() + "/",
        ]

    def routes(self) -> list[Route]:
        return [
            Route("/endpoints/{endpoint_name}/async-invocations", self.invoke, methods=["POST"]),
            Route("/async-invocations", self.invoke, methods=["POST"]),
        ]

    def _runner(self, name: str | None) -> Runner:
        """The model an endpoint name stands for: a served model's name, else the default."""
        models = self.jobs.models
        return models.get(name) if name in models.names else models.default

    async def invoke(self, request: Request) -> Response:
        try:
            self.jobs.check_available()
            job_id = str(uuid.uuid4())
            runner = self._runner(request.path_params.get("endpoint_name"))
            h = _Headers(request)
            endpoint = runner.endpoint(
                custom_attributes(h.get("custom-attributes")).get("endpoint")
            )
            location = h.get("inputlocation")
            try:
                body = await read_body(request, self.config.async_max_body_bytes)
            except PayloadTooLarge:
                raise InputError(
                    f"Body: longer than {self.config.async_max_body_bytes} bytes "
                    "(sagemaker.async_max_body_bytes); put the input in S3 and send "
                    "InputLocation",
                    field="Body",
                ) from None
            if location and body:
                raise InputError("InputLocation and Body cannot both be given", field="Body")
            if not location and not body:
                raise InputError("give InputLocation or an inline Body", field="InputLocation")
            if location:
                self._check_location(location)
            ttl = h.number("requestttlseconds", 60, 21600)
            timeout = h.number("invocationtimeoutseconds", 1, 3600)
            output, failure = self._locations(job_id, h)
            content_type = h.get("content-type") or header(request, b"content-type")
            options: dict[str, Any] = {
                "content_type": content_type,
                "accept": h.get("accept"),
                "headers": _toolkit_headers(content_type, h),
                "endpoint_name": request.path_params.get("endpoint_name") or runner.name,
                "input_location": location,
                "output_location": output,
                "failure_location": failure,
                "inference_id": h.get("inference-id") or job_id,
                "base_url": self.jobs.public_url or str(request.base_url).rstrip("/"),
            }
            if timeout is not None:
                options.update(timeout_s=timeout, timeout_from="InvocationTimeoutSeconds")
            if self.config.async_notification_url:
                await self.jobs.check_webhook(
                    self.config.async_notification_url, field="sagemaker.async_notification_url"
                )
                options.update(
                    webhook=self.config.async_notification_url,
                    webhook_kind="sns",
                    webhook_events=["completed"],
                )
            source = (
                {"location": location} if location else {"body": base64.b64encode(body).decode()}
            )
            job, _ = await self.jobs.submit(
                NewJob(
                    job_id,
                    "sagemaker",
                    runner.name,
                    endpoint.name,
                    source,
                    options,
                    expires_at=time.time() + (ttl or DEFAULT_TTL_S),
                )
            )
        except ImpastoError as exc:
            return _aws_error(exc)
        headers = {
            "X-Amzn-SageMaker-OutputLocation": job.options["output_location"],
            "X-Amzn-SageMaker-FailureLocation": job.options["failure_location"],
        }
        body_out = json.dumps({"InferenceId": job.options["inference_id"]})
        return Response(body_out, 202, headers=headers, media_type="application/json")

    def _check_location(self, location: str) -> None:
        """Only under the allowed prefixes (a ``file://`` path after resolving ``..``)."""
        parsed = urlparse(location)
        if parsed.scheme == "file":
            path = Path(parsed.path).resolve()
            for prefix in self.inputs:
                if prefix.startswith("file://"):
                    root = Path(urlparse(prefix).path).resolve()
                    if path == root or root in path.parents:
                        return
        elif parsed.netloc and any(
            location.startswith(p) for p in self.inputs if not p.startswith("file://")
        ):
            return
        raise InputError(
            f"InputLocation: {location} is not under an allowed input location "
            f"({', '.join(self.inputs)}; sagemaker.async_input_locations)",
            field="InputLocation",
        )

    def _locations(self, job_id: str, h: _Headers) -> tuple[str, str]:
        extension = (h.get("s3outputpathextension") or "").strip("/")
        if ".." in extension.split("/"):
            raise InputError("S3OutputPathExtension: no .. segments", field="S3OutputPathExtension")
        filename = h.get("filename") or f"{job_id}.out"
        if "/" in filename or filename.startswith("."):
            raise InputError("Filename: a plain file name", field="Filename")

        def join(root: str, name: str) -> str:
            parts = [root.rstrip("/"), *([extension] if extension else []), name]
            return "/".join(parts)

        return join(self.output_path, filename), join(self.failure_path, f"{job_id}-error.out")


class _Headers:
    """The request's ``X-Amzn-SageMaker-*`` headers by their short names."""

    def __init__(self, request: Request) -> None:
        self.request = request

    def get(self, name: str) -> str | None:
        value = header(self.request, (_PREFIX + name).encode())
        return value.strip() if value else None

    def number(self, name: str, low: int, high: int) -> int | None:
        value = self.get(name)
        if value is None:
            return None
        if not value.isdigit() or not low <= int(value) <= high:
            field = {"requestttlseconds": "RequestTTLSeconds"}.get(name, "InvocationTimeoutSeconds")
            raise InputError(f"{field}: expected a whole number from {low} to {high}", field=field)
        return int(value)


def _toolkit_headers(content_type: str | None, h: _Headers) -> dict[str, str]:
    """The headers the container's handlers would have seen on ``/invocations``."""
    found = {"Content-Type": content_type, "Accept": h.get("accept")}
    found["X-Amzn-SageMaker-Custom-Attributes"] = h.get("custom-attributes")
    found["X-Amzn-SageMaker-Inference-Id"] = h.get("inference-id")
    return {k: v for k, v in found.items() if v}


def _aws_error(exc: ImpastoError) -> Response:
    """An error as the SageMaker runtime API answers it (botocore reads the type header)."""
    if isinstance(exc, Overloaded):
        status, code = 429, "ThrottlingException"
    elif isinstance(exc, InputError | NotFound):
        status, code = 400, "ValidationError"
    elif exc.status == 503:
        status, code = 503, "ServiceUnavailable"
    else:
        status, code = 500, "InternalFailure"
    body = json.dumps({"message": exc.message})
    headers = {"x-amzn-errortype": code, **exc.headers}
    return Response(body, status, headers=headers, media_type="application/json")
