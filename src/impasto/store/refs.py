"""Model references: ``name:version`` strings, validated once and then kept as frozen data.

A name or version becomes a folder name under ``models/``, so validation is what keeps a
ref from escaping the store; every ref that reaches the filesystem went through
:class:`ModelRef`.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from ..errors import StoreError

LATEST = "latest"
"""The version that means "the newest one"; reserved, never stored."""

_PART = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def _check(kind: str, value: str, text: str) -> None:
    if not value:
        raise StoreError(f"the {kind} is empty in model ref {text!r}; write NAME or NAME:VERSION")
    if "/" in value or "\\" in value or ".." in value:
        raise StoreError(
            f"{kind} {value!r} in model ref {text!r} contains '/', '\\' or '..'; "
            f"a {kind} is a single plain word such as 'sd15' or 'v1.0'"
        )
    if value != value.lower() and _PART.match(value.lower()):
        raise StoreError(
            f"{kind} {value!r} in model ref {text!r} has uppercase letters; "
            f"names and versions are lowercase (use {value.lower()!r})"
        )
    if not _PART.match(value):
        raise StoreError(
            f"invalid {kind} {value!r} in model ref {text!r}: use 1-64 characters from "
            "a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
        )


@dataclass(frozen=True)
class ModelRef:
    """A validated ``name:version``; ``version`` is ``"latest"`` when the ref names no version."""

    name: str
    version: str = LATEST

    def __post_init__(self) -> None:
        text = f"{self.name}:{self.version}"
        _check("name", self.name, text)
        _check("version", self.version, text)

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """Parse ``NAME``, ``NAME:VERSION`` or ``NAME:latest``; :class:`StoreError` if invalid."""
        text = text.strip()
        name, sep, version = text.partition(":")
        if sep and not version:
            raise StoreError(f"model ref {text!r} ends with ':'; write NAME or NAME:VERSION")
        return cls(name, version or LATEST)

    @property
    def is_latest(self) -> bool:
        return self.version == LATEST

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"


def new_version(now: datetime | None = None) -> str:
    """A fresh version that sorts by creation time, e.g. ``20261124-054512-3f2a``."""
    now = now or datetime.now(timezone.utc)
    return f"{now.astimezone(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
