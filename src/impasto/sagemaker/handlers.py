"""The handler functions of a SageMaker ``code/inference.py``, read once at load.

``model_fn(model_dir[, context])``, ``input_fn(body, content_type[, context])``,
``predict_fn(data, model[, context])``, ``output_fn(prediction, accept[, context])`` and
``transform_fn(model, body, content_type, accept[, context])``; each may take a trailing
``context``, which is detected by counting parameters, as the toolkit does. ``transform_fn``
replaces the other three, so defining it with any of them is a start-up error.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import PackageError

# Each function's arguments without the optional trailing context.
ARGUMENTS = {
    "model_fn": ("model_dir",),
    "input_fn": ("input_data", "content_type"),
    "predict_fn": ("data", "model"),
    "output_fn": ("prediction", "accept"),
    "transform_fn": ("model", "input_data", "content_type", "accept"),
}
_REPLACED_BY_TRANSFORM = ("input_fn", "predict_fn", "output_fn")


@dataclass(frozen=True)
class Handler:
    """One user function and whether it takes the context."""

    fn: Callable[..., Any]
    takes_context: bool

    def __call__(self, *args: Any, context: Any) -> Any:
        return self.fn(*args, context) if self.takes_context else self.fn(*args)


@dataclass(frozen=True)
class Handlers:
    """What ``code/inference.py`` defines (None: the toolkit's default is used)."""

    source: Path | None = None
    model_fn: Handler | None = None
    input_fn: Handler | None = None
    predict_fn: Handler | None = None
    output_fn: Handler | None = None
    transform_fn: Handler | None = None

    @property
    def defined(self) -> list[str]:
        return [name for name in ARGUMENTS if getattr(self, name) is not None]


def read_handlers(module: ModuleType, source: Path) -> Handlers:
    """The handler functions ``module`` defines, checked (PackageError naming the problem)."""
    found = {name: getattr(module, name, None) for name in ARGUMENTS}
    if found["transform_fn"] is not None:
        clash = [name for name in _REPLACED_BY_TRANSFORM if found[name] is not None]
        if clash:
            raise PackageError(
                f"{source} defines transform_fn and {', '.join(clash)}: transform_fn does the "
                "work of input_fn, predict_fn and output_fn, so it cannot be combined with "
                "them; keep transform_fn alone or drop it"
            )
    handlers = {name: _handler(name, fn, source) for name, fn in found.items() if fn is not None}
    return Handlers(source, **handlers)


def _handler(name: str, fn: Any, source: Path) -> Handler:
    if not callable(fn):
        raise PackageError(f"{source}: {name} is a {type(fn).__name__}, not a function")
    try:
        count = len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        raise PackageError(f"{source}: cannot read the signature of {name}") from None
    base = ARGUMENTS[name]
    if count not in (len(base), len(base) + 1):
        wanted = ", ".join(base)
        raise PackageError(
            f"{source}: {name} takes {len(base)} or {len(base) + 1} arguments "
            f"({wanted}[, context]) but {count} were given"
        )
    return Handler(fn, count == len(base) + 1)
