"""What a job looks like to clients: Cog's prediction object, and SageMaker's notification.

The Cog envelope is :func:`impasto.server.adapters.cog.prediction_body` (the same object the
synchronous route answers) plus what a job adds: ``model``, ``input``, ``progress``,
``urls``, ``attempts`` and ``metrics.queue_time``. Result references become URLs each time
it is rendered, so the URLs handed out are always fresh.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from ..config import MediaConfig
from ..server.adapters.cog import prediction_body
from .records import Job
from .results import ResultFiles, with_urls

_MEDIA = MediaConfig()


def iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp, timezone.utc).isoformat()


def cog_envelope(job: Job, results: ResultFiles, base_url: str | None) -> dict[str, Any]:
    """Cog's prediction object for ``job`` (``status`` in Cog's words)."""
    output = with_urls(job.output, lambda ref: results.url_for(ref, base_url))
    body = prediction_body(
        job,  # type: ignore[arg-type]  # a job has what the body reads of a Prediction
        job.cog_status,
        media=_MEDIA,
        output=output,
        error=job.error,
    )
    body["completed_at"] = iso(job.completed_at)
    metrics = body["metrics"]
    if job.started_at is None or job.status == "processing":
        metrics.pop("predict_time", None)
    if job.started_at is not None:
        metrics["queue_time"] = round(max(0.0, job.started_at - job.created_at), 4)
        if job.status == "processing":
            metrics["predict_time"] = round(time.time() - job.started_at, 4)
    base = (base_url or "").rstrip("/")
    get = f"{base}/predictions/{job.id}"
    body.update(
        model=job.model,
        input=job.input if job.protocol == "cog" else None,
        progress=None
        if job.progress is None
        else {"step": job.progress[0], "total": job.progress[1]},
        urls={"get": get, "cancel": f"{get}/cancel", "stream": get},
        attempts=[
            {**a.to_dict(), "started_at": iso(a.started_at), "ended_at": iso(a.ended_at)}
            for a in job.attempts
        ],
    )
    if job.protocol == "sagemaker":
        body["output_location"] = job.options.get("output_location")
        body["failure_location"] = job.options.get("failure_location")
    return body


def sns_notification(job: Job, region: str) -> dict[str, Any]:
    """The notification SageMaker publishes to SNS when an async invocation ends."""
    opts = job.options
    ok = job.status == "succeeded"
    request = {
        "contentType": opts.get("content_type") or "application/json",
        "endpointName": opts.get("endpoint_name"),
        "inputLocation": opts.get("input_location"),
    }
    body: dict[str, Any] = {
        "awsRegion": region,
        "eventTime": _aws_time(job.completed_at),
        "receivedTime": _aws_time(job.created_at),
        "invocationStatus": "Completed" if ok else "Failed",
        "requestParameters": request,
        "inferenceId": opts.get("inference_id") or job.id,
        "eventVersion": "1.0",
        "eventSource": "aws:sagemaker",
        "eventName": "InferenceResult",
    }
    if ok:
        output = job.output or {}
        body["responseParameters"] = {
            "contentType": output.get("content_type"),
            "outputLocation": opts.get("output_location"),
        }
    else:
        body["failureReason"] = f"ClientError: {job.error or job.status}"
        body["failureLocation"] = opts.get("failure_location")
    return body


def _aws_time(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    when = datetime.fromtimestamp(stamp, timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
