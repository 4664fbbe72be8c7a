"""What a model logs during a prediction goes into that prediction; secrets go nowhere.

Two process-wide hooks, installed while a server (or an in-process call) runs and removed
with the last user:

- a log-record factory that tags every record made during a prediction with its
  ``request_id`` (records made outside one are left alone, so a library that passes its
  own ``request_id`` in ``extra``, as Ray Serve does, still can) and replaces the values of every registered secret with ``***``, in the
  message and in the traceback. It works whatever handlers the embedding application
  configured, so a server built with ``create_app`` inside someone else's process (a Ray
  replica, a test) redacts as ``impasto serve`` does;
- a handler on the root logger and a tee on ``sys.stdout`` that copy the lines a model writes
  while it runs (``logging`` and ``print``) into its prediction's bounded logs. They still
  reach the server log as before.

Which prediction is running is a context variable set around every call of user code
(:func:`running`), including calls made in worker threads.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

from .context import RequestContext

_current: contextvars.ContextVar[Sequence[RequestContext] | None] = contextvars.ContextVar(
    "impasto_prediction", default=None
)
_OWN_LOGGERS = ("impasto", "uvicorn")


@contextlib.contextmanager
def running(contexts: Sequence[RequestContext]) -> Iterator[None]:
    """Attribute the log lines and prints made inside the block to these requests."""
    token = _current.set(contexts)
    try:
        yield
    finally:
        _current.reset(token)


def enter(contexts: Sequence[RequestContext]) -> contextvars.Token:
    """:func:`running` without the context manager, for the hot path; undo with :func:`leave`."""
    return _current.set(contexts)


def leave(token: contextvars.Token) -> None:
    _current.reset(token)


def call_in(contexts: Sequence[RequestContext], fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` wrapped to run with these requests current (for a worker thread)."""

    def call() -> Any:
        token = _current.set(contexts)
        try:
            return fn()
        finally:
            _current.reset(token)

    return call


def current_request_id() -> str | None:
    contexts = _current.get()
    return contexts[0].request_id if contexts else None


class _CaptureHandler(logging.Handler):
    """Copies records emitted inside a prediction into its logs (impasto's own excluded)."""

    def emit(self, record: logging.LogRecord) -> None:
        contexts = _current.get()
        if not contexts or record.name.startswith(_OWN_LOGGERS):
            return
        try:
            line = f"{record.levelname} {record.name}: {record.getMessage()}"
        except Exception:  # a broken format string is the model's problem, not ours
            return
        for ctx in contexts:
            ctx.log(line)


class _StdoutTee:
    """``sys.stdout`` that also gives complete lines printed inside a prediction to it."""

    def __init__(self, real: TextIO) -> None:
        self.real = real
        self._partial = threading.local()

    def write(self, text: str) -> int:
        contexts = _current.get()
        if contexts:
            pending = getattr(self._partial, "text", "") + text
            *lines, rest = pending.split("\n")
            self._partial.text = rest
            for line in lines:
                for ctx in contexts:
                    ctx.log(line)
        return self.real.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class _Hooks:
    """The installed hooks and who uses them (reference counted)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.redactors: list[Callable[[str], str]] = []
        self.previous_factory: Callable[..., logging.LogRecord] | None = None
        self.handler = _CaptureHandler()
        self.tee: _StdoutTee | None = None
        self.factory = self._make  # one bound method, so it can be recognised when removed

    def _make(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        make = self.previous_factory or logging.LogRecord
        record = make(*args, **kwargs)
        request_id = current_request_id()
        if request_id is not None:
            record.request_id = request_id
        if self.redactors:
            _redact(record, self.redactors)
        return record


def _redact(record: logging.LogRecord, redactors: list[Callable[[str], str]]) -> None:
    def clean(text: str) -> str:
        for redact in redactors:
            text = redact(text)
        return text

    try:
        message = record.getMessage()
    except Exception:
        return
    cleaned = clean(message)
    if cleaned != message:  # (left alone otherwise: filters may read the args)
        record.msg, record.args = cleaned, None
    if record.exc_info and not record.exc_text:
        record.exc_text = clean("".join(traceback.format_exception(*record.exc_info)).rstrip())
    if record.stack_info:
        record.stack_info = clean(record.stack_info)


_hooks = _Hooks()


def install(redactor: Callable[[str], str] | None = None) -> Callable[[], None]:
    """Install the hooks (once per process) and register ``redactor``; returns the undo."""
    with _hooks.lock:
        if _hooks.users == 0:
            _hooks.previous_factory = logging.getLogRecordFactory()
            logging.setLogRecordFactory(_hooks.factory)
            logging.getLogger().addHandler(_hooks.handler)
        # checked on every install: whoever replaced sys.stdout since (a test runner's
        # capture, an embedding app) gets the tee wrapped around its stream in turn
        if not isinstance(sys.stdout, _StdoutTee):
            _hooks.tee = _StdoutTee(sys.stdout)
            sys.stdout = _hooks.tee  # type: ignore[assignment]
        _hooks.users += 1
        if redactor is not None:
            _hooks.redactors.append(redactor)
    done = False

    def uninstall() -> None:
        nonlocal done
        with _hooks.lock:
            if done:
                return
            done = True
            if redactor is not None and redactor in _hooks.redactors:
                _hooks.redactors.remove(redactor)
            _hooks.users -= 1
            if _hooks.users == 0:
                if logging.getLogRecordFactory() is _hooks.factory:
                    logging.setLogRecordFactory(_hooks.previous_factory or logging.LogRecord)
                logging.getLogger().removeHandler(_hooks.handler)
                if sys.stdout is _hooks.tee and _hooks.tee is not None:
                    sys.stdout = _hooks.tee.real  # type: ignore[assignment]
                _hooks.tee = None

    return uninstall
