"""What the page shows of a prediction: its progress, its error, its outputs as files.

Outputs arrive as impasto's JSON (media as ``{data, content_type, format...}`` objects,
whether the prediction ran in-process or on a remote server); each media object is written
to a file exactly as the API returned it (the download is the server's own PNG or MP4) and
replaced in the JSON by its file name, which leaves the recipe, seeds and timings to show.
"""

from __future__ import annotations

import base64
import html
import itertools
import shutil
import tempfile
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEEP_RESULTS = 64  # result folders kept on disk per process (older ones are removed)


@dataclass
class Outputs:
    images: list[str] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    audios: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    rest: Any = None  # the output with each media object replaced by its file name
    seed: int | None = None


class ResultFiles:
    """A folder per result under one temporary folder, the oldest removed past ``keep``."""

    def __init__(self, keep: int = KEEP_RESULTS) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="impasto-ui-"))
        self._folders: deque[Path] = deque()
        self._keep = keep
        self._count = itertools.count()
        self._lock = threading.Lock()

    def folder(self) -> Path:
        with self._lock:
            path = self.root / f"r{next(self._count)}"
            path.mkdir()
            self._folders.append(path)
            while len(self._folders) > self._keep:
                shutil.rmtree(self._folders.popleft(), ignore_errors=True)
        return path

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _is_media(value: Any) -> bool:
    return isinstance(value, dict) and "data" in value and "content_type" in value


def split_outputs(output: Any, folder: Path) -> Outputs:
    """Write each media object of ``output`` to ``folder`` and sort the files by kind."""
    out = Outputs()
    counter = itertools.count(1)

    def walk(value: Any) -> Any:
        if _is_media(value):
            kind = str(value.get("content_type", "")).split("/", 1)[0]
            ext = value.get("format") or "bin"
            name = value.get("filename") or f"{kind or 'file'}-{next(counter)}.{ext}"
            path = folder / Path(name).name
            data = str(value["data"])
            path.write_bytes(
                base64.b64decode(data.split(",", 1)[1] if data.startswith("data:") else data)
            )
            {"image": out.images, "video": out.videos, "audio": out.audios}.get(
                kind, out.files
            ).append(str(path))
            size = f" ({value['width']}x{value['height']})" if value.get("width") else ""
            return f"<{kind} {path.name}{size}>"
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    rest = walk(output)
    # the JSON component parses a string as JSON text: a lone media object (a model that
    # returns one image or one video) or a plain string result is shown under "output"
    out.rest = {"output": rest} if isinstance(rest, str) else rest
    if isinstance(output, dict):
        seeds = output.get("seeds")
        seed = seeds[0] if isinstance(seeds, list) and seeds else output.get("seed")
        out.seed = seed if isinstance(seed, int) else None
    return out


# status lines -----------------------------------------------------------------------------------
def progress_html(step: int, total: int, eta: float | None) -> str:
    eta_text = f" · ETA {eta:.1f} s" if eta is not None else ""
    return (
        f'<div class="impasto-status" data-state="running" data-step="{step}" '
        f'data-total="{total}"><progress value="{step}" max="{total}"></progress> '
        f"<span>step {step} of {total}{eta_text}</span></div>"
    )


def status_html(state: str, text: str) -> str:
    return (
        f'<div class="impasto-status" data-state="{html.escape(state)}">'
        f"<span>{html.escape(text)}</span></div>"
    )


def error_html(error: dict[str, Any]) -> str:
    """An error as the page shows it: the field named first, then impasto's message."""
    fieldname = error.get("field")
    message = str(error.get("message", "error"))
    kind = str(error.get("type", "error"))
    named = f"<b>{html.escape(str(fieldname))}</b>: " if fieldname else ""
    return (
        f'<div class="impasto-error" data-type="{html.escape(kind)}" '
        f'data-field="{html.escape(str(fieldname or ""))}">⚠ {named}{html.escape(message)}'
        f" <small>({html.escape(kind)})</small></div>"
    )


def state_html(model: str, state: str, message: str = "") -> str:
    """A model's load state: loading, ready, or failed with the message."""
    shown = state.replace("_", " ")
    detail = f": {html.escape(message)}" if message and state != "ready" else ""
    return (
        f'<div class="impasto-state" data-model="{html.escape(model)}" '
        f'data-state="{html.escape(state)}"><span class="impasto-dot"></span> '
        f"<b>{html.escape(model)}</b> {html.escape(shown)}{detail}</div>"
    )
