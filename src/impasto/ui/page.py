"""The playground page: one Gradio Blocks built from the backend's model and endpoint views.

A tab per model and endpoint, the form on the left (:mod:`impasto.ui.forms`), progress,
preview, outputs, the recipe and the request as ``curl`` and Python on the right. Generate
is an async generator on the server's own event loop: it starts a :class:`~impasto.ui.backends.Run`
and turns its updates into page updates as they come. Cancel aborts that run (at the
model's next step); leaving the page does too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import gradio as gr  # this module is imported only when the playground is on

from ..errors import ImpastoError
from .backends import Backend, LoadState, Run
from .describe import EndpointView, ModelView
from .forms import Form, FormError, build_form, payload_from, slug
from .results import (
    ResultFiles,
    error_html,
    progress_html,
    split_outputs,
    state_html,
    status_html,
)
from .snippets import curl_command, python_snippet

SETTLED = ("ready", "failed")

CSS = """
.impasto-status progress { width: 60%; vertical-align: middle; }
.impasto-error { color: var(--error-text-color, #b91c1c); background: var(--error-background-fill, #fef2f2);
  border: 1px solid var(--error-border-color, #fca5a5); border-radius: 6px; padding: 8px 10px; }
.impasto-state { font-size: 0.95em; }
.impasto-dot { display: inline-block; width: 0.7em; height: 0.7em; border-radius: 50%;
  background: #eab308; vertical-align: baseline; }
.impasto-state[data-state="ready"] .impasto-dot { background: #22c55e; }
.impasto-state[data-state="failed"] .impasto-dot,
.impasto-state[data-state="unreachable"] .impasto-dot { background: #ef4444; }
"""


class Tab:
    """The components and handlers of one endpoint's tab."""

    def __init__(self, page: Page, view: EndpointView) -> None:
        self.page = page
        self.view = view
        self.prefix = f"impasto-{slug(view.model)}-{slug(view.endpoint)}"
        self.form: Form | None = None

    def build(self, gr: Any) -> None:
        p = self.prefix
        view = self.view
        if view.description:
            gr.Markdown(view.description, elem_id=f"{p}-description")
        with gr.Row():
            with gr.Column(scale=1):
                self.form = build_form(gr, view, p)
                with gr.Row():
                    self.go = gr.Button("Generate", variant="primary", elem_id=f"{p}-generate")
                    self.stop = gr.Button("Cancel", variant="stop", elem_id=f"{p}-cancel")
            with gr.Column(scale=1):
                self.status = gr.HTML(status_html("idle", ""), elem_id=f"{p}-status")
                self.error = gr.HTML("", elem_id=f"{p}-error")
                self.preview = gr.Image(
                    label="Preview", visible=False, interactive=False, elem_id=f"{p}-preview"
                )
                self.gallery = gr.Gallery(
                    label="Images", columns=2, height="auto", elem_id=f"{p}-gallery"
                )
                self.video = gr.Video(label="Video", visible=False, elem_id=f"{p}-video")
                self.audio = gr.Audio(label="Audio", visible=False, elem_id=f"{p}-audio")
                self.files = gr.File(
                    label="Files", file_count="multiple", visible=False, elem_id=f"{p}-files"
                )
                self.result = gr.JSON(label="Result and recipe", elem_id=f"{p}-result")
                with gr.Accordion(
                    "This request with impasto's API", open=False, elem_id=f"{p}-api"
                ):
                    self.curl = gr.Code(language="shell", label="curl", elem_id=f"{p}-curl")
                    self.python = gr.Code(language="python", label="Python", elem_id=f"{p}-python")
        self.last_seed = gr.State(None)
        outputs = [
            self.status,
            self.error,
            self.preview,
            self.gallery,
            self.video,
            self.audio,
            self.files,
            self.result,
            self.curl,
            self.python,
            self.last_seed,
        ]
        seed = self.form.seed
        if seed is not None:
            outputs.append(seed.number)
            seed.reuse.click(
                lambda last, now: (last if last is not None else now, False),
                inputs=[self.last_seed, seed.number],
                outputs=[seed.number, seed.random],
                queue=False,
            )
        inputs = [*self.page.key_inputs, *self.form.inputs]
        run = self.go.click(
            self.generate,
            inputs=inputs,
            outputs=outputs,
            concurrency_limit=None,  # impasto's runner queues, batches and says 429
            show_progress="hidden",
        )
        self.stop.click(self.cancel, inputs=None, outputs=None, queue=False)
        self.page.events.append(run)

    # handlers -----------------------------------------------------------------------------
    async def generate(self, request: gr.Request, *args: Any) -> AsyncIterator[dict[Any, Any]]:
        """Gradio passes the request first (by its annotation), then the form's values."""
        gr = self.page.gr
        keys = len(self.page.key_inputs)
        key = (args[0] or None) if keys else None
        values = list(args[keys:])
        assert self.form is not None
        try:
            payload = payload_from(self.form, values)
        except FormError as exc:
            error = {"type": "invalid_input", "message": exc.message, "field": exc.field}
            yield {self.error: error_html(error), self.status: status_html("invalid", "")}
            return
        base = self.page.base_url(request)
        auth = self.page.backend.auth_required
        first: dict[Any, Any] = {
            self.error: "",
            self.status: status_html("queued", "waiting for the model…"),
            self.preview: gr.update(value=None, visible=False),
            self.curl: curl_command(base, self.view.path, payload, api_key=auth),
            self.python: python_snippet(base, self.view.path, payload, api_key=auth),
        }
        seed = self.form.seed
        if seed is not None and isinstance(payload, dict):
            name = next(f.name for f, role in self.form.readers if role == "seed" and f)
            first[seed.number] = payload.get(name)
            first[self.last_seed] = payload.get(name)
        yield first
        try:
            run = await self.page.backend.start(self.view, payload, key)
        except ImpastoError as exc:
            yield {
                self.error: error_html(exc.to_dict()["error"]),
                self.status: status_html("failed", "not started"),
            }
            return
        token = (getattr(request, "session_hash", None), self.view.key)
        self.page.runs[token] = run
        started = time.monotonic()
        chunks: list[Any] = []
        try:
            async for update in run.updates():
                data = update.data
                if update.kind == "progress":
                    yield {self.status: progress_html(data["step"], data["total"], data.get("eta"))}
                elif update.kind == "preview" and data.get("image") is not None:
                    yield {self.preview: gr.update(value=data["image"], visible=True)}
                elif update.kind == "chunk":
                    chunks.append(data["chunk"])
                    yield {
                        self.result: chunks,
                        self.status: status_html("running", f"{len(chunks)} chunks"),
                    }
                elif update.kind == "result":
                    yield self._shown(gr, data["output"], time.monotonic() - started)
                elif update.kind == "error":
                    canceled = data.get("type") == "canceled"
                    yield {
                        self.error: "" if canceled else error_html(data),
                        self.status: status_html(
                            "canceled" if canceled else "failed",
                            "canceled" if canceled else "failed",
                        ),
                    }
                    return
            if chunks:
                seconds = time.monotonic() - started
                yield {self.status: status_html("done", f"done in {seconds:.1f} s")}
        finally:
            if self.page.runs.get(token) is run:
                del self.page.runs[token]

    def _shown(self, gr: Any, output: Any, seconds: float) -> dict[Any, Any]:
        out = split_outputs(output, self.page.files.folder())
        shown: dict[Any, Any] = {
            self.status: status_html("done", f"done in {seconds:.1f} s"),
            self.preview: gr.update(visible=False),
            self.gallery: out.images,
            self.video: gr.update(
                value=out.videos[0] if out.videos else None, visible=bool(out.videos)
            ),
            self.audio: gr.update(
                value=out.audios[0] if out.audios else None, visible=bool(out.audios)
            ),
            self.files: gr.update(value=out.files or None, visible=bool(out.files)),
            self.result: out.rest,
        }
        if out.seed is not None:
            shown[self.last_seed] = out.seed
        return shown

    def cancel(self, request: gr.Request) -> None:
        run = self.page.runs.get((getattr(request, "session_hash", None), self.view.key))
        if run is not None:
            run.cancel()


class Page:
    """The whole playground for one backend."""

    def __init__(
        self, backend: Backend, *, title: str = "impasto playground", docs: str | None = None
    ) -> None:
        self.backend = backend
        self.title = title
        self.docs = docs
        self.runs: dict[tuple[str | None, str], Run] = {}
        self.files = ResultFiles()
        self.events: list[Any] = []
        self.key_inputs: list[Any] = []
        self.gr: Any = None

    def base_url(self, request: Any) -> str:
        url = getattr(self.backend, "url", None)
        if url:
            return url
        headers = getattr(request, "headers", None) or {}
        host = headers.get("host", "127.0.0.1:8080")
        scheme = headers.get("x-forwarded-proto", "http")
        return f"{scheme}://{host}"

    def build(self) -> Any:
        import gradio as gr

        self.gr = gr
        views = self.backend.views()
        with gr.Blocks(title=self.title, analytics_enabled=False) as blocks:
            docs = f" · [API docs]({self.docs})" if self.docs else ""
            gr.Markdown(f"## {self.title}{docs}", elem_id="impasto-title")
            if self.backend.auth_required:
                key = gr.Textbox(
                    label="API key",
                    type="password",
                    placeholder="this server asks for an API key",
                    elem_id="impasto-api-key",
                )
                self.key_inputs.append(key)
            states = [
                gr.HTML(state_html(m.name, "pending"), elem_id=f"impasto-state-{slug(m.name)}")
                for m in views
            ]
            if len(views) == 1:
                self._endpoints(gr, views[0])
            else:
                with gr.Tabs():
                    for model in views:
                        with gr.Tab(model.name, elem_id=f"impasto-tab-{slug(model.name)}"):
                            self._endpoints(gr, model)
            timer = gr.Timer(1.0)
            refresh = self._states(views)
            timer.tick(refresh, outputs=[*states, timer], queue=False, show_progress="hidden")
            blocks.load(refresh, outputs=[*states, timer], queue=False, show_progress="hidden")
        return blocks

    def _endpoints(self, gr: Any, model: ModelView) -> None:
        with gr.Tabs():
            for view in model.endpoints:
                with gr.Tab(
                    view.endpoint, elem_id=f"impasto-tab-{slug(view.model)}-{slug(view.endpoint)}"
                ):
                    Tab(self, view).build(gr)

    def _states(self, views: list[ModelView]) -> Any:
        gr_ = self

        async def refresh() -> list[Any]:
            found: list[LoadState] = await asyncio.gather(
                *(gr_.backend.state(m.name) for m in views)
            )
            settled = all(s.state in SETTLED for s in found)
            htmls = [
                state_html(m.name, s.state, s.message) for m, s in zip(views, found, strict=True)
            ]
            return [*htmls, gr_.gr.Timer(active=not settled)]

        return refresh
