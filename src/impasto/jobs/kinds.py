"""How each protocol's jobs read their input and keep their result.

- **cog**: the input is the endpoint's fields (validated at submit); media outputs go to
  the result store and the output keeps references to them, shaped as Cog shapes outputs
  (:func:`impasto.server.adapters.cog.cog_output`); JSON past
  ``jobs.results.max_inline_bytes`` goes there too.
- **sagemaker**: the input is a body (inline, or at ``X-Amzn-SageMaker-InputLocation``),
  read in the dialect ``/invocations`` speaks for the model's kind; the reply's bytes go to
  the output location (``<id>.out``), an error body to the failure location.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from pathlib import Path
from typing import Any

import fsspec

from ..config import MediaConfig
from ..errors import ImpastoError, InputError, PayloadTooLarge
from ..media import encode
from ..prediction import Prediction
from ..runner import Runner, is_stream
from ..sagemaker.mms import Headers
from ..server.adapters.cog import cog_output
from ..server.adapters.sagemaker import (
    check_json_type,
    mapped_inbound,
    toolkit_error,
    toolkit_inbound,
)
from ..server.callpath import Gathered
from ..server.errors import error_response
from ..server.requests import parse_json
from ..server.responses import dumps
from ..spec import EndpointSpec
from .live import Live
from .records import Job
from .results import ResultFiles


class CogKind:
    """Jobs submitted through Cog's API."""

    def __init__(self, results: ResultFiles, max_inline_bytes: int) -> None:
        self.results = results
        self.max_inline_bytes = max_inline_bytes

    async def run(
        self, runner: Runner, endpoint: EndpointSpec, p: Prediction, job: Job, live: Live
    ) -> Any:
        value = await runner.decode(p, job.input)
        result = await runner.run(p, value)
        media = runner.config.media
        if is_stream(result):  # each chunk is kept (and sent as an `output` event) as it comes
            async with contextlib.aclosing(result):
                async for chunk in result:
                    live.add_chunk(await asyncio.to_thread(self.keep, job, chunk, media, live))
            return list(live.chunks)
        return await asyncio.to_thread(self.keep, job, result, media, live)

    def keep(self, job: Job, value: Any, media: MediaConfig, live: Live) -> Any:
        """``value`` as the job keeps it: media stored, large JSON stored (blocking)."""

        def store(item: Any) -> str:
            enc = encode(item, config=media)
            name = f"{live.next_file()}.{enc.format}"
            return self.results.put(job.id, name, enc.data, enc.content_type)

        output = cog_output(value, media, uri=store)
        data = dumps(output)
        if len(data) > self.max_inline_bytes:
            name = f"{live.next_file()}.json"
            return self.results.put(job.id, name, data, "application/json")
        return output

    async def failed(self, job: Job, error: ImpastoError) -> None:
        return None


class SageMakerKind:
    """Jobs submitted as SageMaker async invocations."""

    def __init__(self, writers: Any, models: Any) -> None:
        self.writers = writers  # the SageMaker adapter's result writers
        self.models = models

    async def run(
        self, runner: Runner, endpoint: EndpointSpec, p: Prediction, job: Job, live: Live
    ) -> Any:
        opts = job.options
        limit = runner.config.runtime.max_body_bytes
        body = await asyncio.to_thread(read_input, job, limit)
        content_type = opts.get("content_type")
        if runner.kind == "sagemaker":
            headers = Headers(opts.get("headers", {}).items())
            inbound = toolkit_inbound(body, content_type, opts.get("accept"), headers)
        else:
            check_json_type((content_type or "application/json").split(";")[0].strip().lower())
            depth = runner.config.runtime.max_json_depth
            data = await runner.in_input_pool(lambda: parse_json(body, depth))
            inbound = mapped_inbound(data, endpoint, opts.get("accept"), len(body))
        p.ctx.output = inbound.prefs
        value = await runner.decode(p, inbound.payload, size=inbound.size)
        result = await runner.run(p, value)
        if is_stream(result):
            async with contextlib.aclosing(result):
                result = Gathered([chunk async for chunk in result])
        response = await self.writers.write_result(None, p, result)
        data = bytes(response.body)
        kind = response.headers.get("content-type", "application/octet-stream")
        if response.status_code >= 300:
            raise ImpastoError(
                f"the model answered HTTP {response.status_code}: "
                f"{data[:1000].decode('utf-8', 'replace')}"
            )
        location = opts["output_location"]
        await asyncio.to_thread(write_location, location, data, kind)
        return {"location": location, "content_type": kind, "bytes": len(data)}

    async def failed(self, job: Job, error: ImpastoError) -> None:
        """The error body ``/invocations`` would have answered, at the failure location."""
        location = job.options.get("failure_location")
        if not location:
            return
        runner = self.models.get(job.model)
        if runner.kind == "sagemaker":
            response = toolkit_error(error.status, error.message)
        else:
            response = error_response(error)
        await asyncio.to_thread(write_location, location, bytes(response.body), "application/json")


def read_input(job: Job, limit: int) -> bytes:
    """The invocation's body: inline, or read from its input location (at most ``limit``)."""
    source = job.input or {}
    if "body" in source:
        return base64.b64decode(source["body"])
    location = source["location"]
    try:
        with fsspec.open(location, "rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise InputError(
            f"the input location {location} does not exist", field="InputLocation"
        ) from None
    except Exception as exc:
        raise ImpastoError(f"cannot read the input location {location}: {exc}") from None
    if len(data) > limit:
        raise PayloadTooLarge(
            f"the input at {location} is larger than {limit} bytes (runtime.max_body_bytes)",
            field="InputLocation",
        )
    return data


def write_location(url: str, data: bytes, content_type: str) -> None:
    """Write ``data`` at ``url`` (a ``file://`` path or any fsspec URL)."""
    fs, path = fsspec.core.url_to_fs(url)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fs.pipe_file(path, data)
    elif protocol in ("s3", "s3a"):
        fs.pipe_file(path, data, ContentType=content_type)
    else:
        fs.pipe_file(path, data)
