"""Console output and error reporting shared by the commands (the only place that prints)."""

from __future__ import annotations

import enum
import logging
import re
import sys
import traceback
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import ConfigError, ImpastoError

err_console = Console(stderr=True, highlight=False)
console = Console(highlight=False)
F = TypeVar("F", bound=Callable[..., Any])
DEBUG = {"on": False}
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class LogLevel(str, enum.Enum):
    """``--log-level`` values (the help lists them)."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"
    critical = "critical"


# Probes and scrapes come every few seconds: not access-logged (nothing happens there).
QUIET_PATHS = frozenset(
    {"/", "/health/live", "/health/ready", "/metrics", "/ping", "/healthcheck", "/health-check"}
)


_PROBE = re.compile(r"/v2/health/\w+|/v[12]/models/[^/:]+(/loaded|/ready)?")


class _QuietProbes(logging.Filter):
    """Drops uvicorn's access-log lines for health probes and metric scrapes (GETs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and record.name == "uvicorn.access":
            if str(args[1]) != "GET":
                return True
            path = str(args[2]).split("?", 1)[0]
            return not (path in QUIET_PATHS or _PROBE.fullmatch(path))
        return True


def fail(exc: BaseException) -> typer.Exit:
    """Print one clear line for ``exc`` (a traceback only with --debug) and pick the exit code."""
    if DEBUG["on"]:
        err_console.print(traceback.format_exc(), markup=False)
    if isinstance(exc, ImpastoError):
        err_console.print(f"[red]error:[/red] {escape(exc.message)}", soft_wrap=True)
        return typer.Exit(exc.exit_code)
    err_console.print(f"[red]error:[/red] {escape(f'{type(exc).__name__}: {exc}')}", soft_wrap=True)
    return typer.Exit(1)


def handle_errors(fn: F) -> F:
    """Turn any exception escaping a command into one line on stderr and a distinct exit code."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise fail(exc) from None

    return wrapper  # type: ignore[return-value]


class _Formatter(logging.Formatter):
    """``time level logger: message``, with ``[request ID]`` for lines logged during a
    prediction (the id the server answers in ``X-Request-ID``)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        request_id = getattr(record, "request_id", "-")
        return text if request_id == "-" else f"{text} [request {request_id}]"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a line is logged: a caller that swaps it
    (a test runner, an embedding application) never leaves it writing to a closed stream."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler sets it; the property decides
        pass


def configure_logging(
    level: str | LogLevel = "info", redactor: logging.Filter | None = None
) -> None:
    """Only the CLI configures logging; the library never does on import."""
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    if redactor is not None:
        handler.addFilter(redactor)
    level = level.value if isinstance(level, LogLevel) else str(level)
    if level.lower() not in LOG_LEVELS:
        raise ConfigError(f"--log-level {level!r}: use one of {', '.join(LOG_LEVELS)}")
    root = logging.getLogger()
    for old in list(root.handlers):
        # ours from an earlier call, or a console handler another library's basicConfig
        # added (each line would print twice); a file or test-capture handler stays
        if isinstance(old, _StderrHandler) or type(old) is logging.StreamHandler:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    access = logging.getLogger("uvicorn.access")
    for old in [f for f in access.filters if isinstance(f, _QuietProbes)]:
        access.removeFilter(old)
    access.addFilter(_QuietProbes())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True


class ProgressBar:
    """A progress bar on a terminal, fed by a prediction's or a job's progress events."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.task: Any = None

    def __call__(self, event: Any) -> None:
        if event.kind != "progress" or not err_console.is_terminal:
            return
        if self.bar is None:
            from rich.progress import Progress

            self.bar = Progress(console=err_console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task("generating", total=event.data.get("total"))
        self.bar.update(self.task, completed=event.data.get("step"), total=event.data.get("total"))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
