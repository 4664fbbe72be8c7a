"""Make ``octoai.service`` and ``octoai.types`` importable for an OctoAI-style service.

An installed ``octoai-sdk`` whose ``octoai.types`` has ``Text`` (0.1 - 0.4, what such
services were written against) is used as it is. Otherwise (no SDK, a later one without
``Text``, or the unrelated ``octoai`` 1.x distribution under the same name) impasto's own
:mod:`~impasto.octoai.compat_service` and :mod:`~impasto.octoai.compat_types` are
registered in ``sys.modules`` as ``octoai``, ``octoai.service`` and ``octoai.types`` while a
service is imported and served, and whatever was there before is put back after the last
one is done: other packages in the process never see them.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.util
import sys
import threading
import types
from collections.abc import Iterator
from typing import Any

from ..config import MediaConfig

NAMES = ("octoai", "octoai.service", "octoai.types")


class _Registry:
    lock = threading.Lock()
    users = 0
    saved: dict[str, Any] = {}


_media: contextvars.ContextVar[MediaConfig | None] = contextvars.ContextVar(
    "impasto_octoai_media", default=None
)


@contextlib.contextmanager
def media_policy(media: MediaConfig) -> Iterator[None]:
    """The URL policy ``from_url`` follows in this thread: the served package's media
    settings (each package its own, in one process)."""
    token = _media.set(media)
    try:
        yield
    finally:
        _media.reset(token)


def installed_sdk() -> bool:
    """Whether an installed ``octoai-sdk`` provides ``Service`` and ``Text`` (what it
    imported to find out is taken back out of ``sys.modules`` when it does not)."""
    if "octoai" in sys.modules and getattr(sys.modules["octoai"], "__impasto_compat__", False):
        return False
    try:
        if importlib.util.find_spec("octoai") is None:
            return False
    except (ImportError, ValueError):
        return False
    before = {name for name in sys.modules if name == "octoai" or name.startswith("octoai.")}
    try:
        sdk_types = importlib.import_module("octoai.types")
        service = importlib.import_module("octoai.service")
        if hasattr(sdk_types, "Text") and hasattr(service, "Service"):
            return True
    except Exception:
        pass
    for name in [n for n in sys.modules if n == "octoai" or n.startswith("octoai.")]:
        if name not in before:
            del sys.modules[name]
    return False


def compat_modules() -> dict[str, types.ModuleType]:
    """The three modules impasto registers in place of the SDK."""
    from . import compat_service, compat_types

    package = types.ModuleType("octoai", "impasto's stand-in for octoai-sdk's modules")
    package.__path__ = []  # a package: ``import octoai.types`` finds the entries below
    package.__impasto_compat__ = True  # type: ignore[attr-defined]
    package.service = compat_service  # type: ignore[attr-defined]
    package.types = compat_types  # type: ignore[attr-defined]
    return {"octoai": package, "octoai.service": compat_service, "octoai.types": compat_types}


@contextlib.contextmanager
def sdk_modules() -> Iterator[None]:
    """``octoai.service`` and ``octoai.types`` importable for the block (see the module)."""
    if installed_sdk():
        yield
        return
    with _Registry.lock:
        if _Registry.users == 0:
            modules = compat_modules()
            _Registry.saved = {name: sys.modules.get(name) for name in modules}
            sys.modules.update(modules)
        _Registry.users += 1
    try:
        yield
    finally:
        with _Registry.lock:
            _Registry.users -= 1
            if _Registry.users == 0:
                for name, module in _Registry.saved.items():
                    if module is None:
                        sys.modules.pop(name, None)
                    else:
                        sys.modules[name] = module
                _Registry.saved = {}


def fetch(url: str) -> bytes:
    """``from_url``'s download under the served package's URL policy: the SSRF guard
    (public addresses only unless ``media.allow_private_urls``), size and time limits.
    The service itself asks, so ``media.allow_urls`` (about clients' URLs) does not apply."""
    from ..media import fetch_url

    config = (_media.get() or MediaConfig()).model_copy(update={"allow_urls": True})
    data, _ = fetch_url(url, field="url", config=config)
    return data
