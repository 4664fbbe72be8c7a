"""Secrets: resolved from a folder of files and ``IMPASTO_SECRET_<NAME>`` variables, never shown.

The values are kept in a read-only mapping whose ``repr`` hides them, and a
:class:`Redactor` scrubs them from log records and error messages.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

DEFAULT_SECRETS_DIR = "/secrets"


class Secrets(Mapping[str, str]):
    """A read-only mapping of secret name to value that never prints its values."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = dict(values)

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Secrets({', '.join(f'{k}=***' for k in self._values)})"

    __str__ = __repr__


def _env_name(name: str) -> str:
    return "IMPASTO_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def resolve_secrets(
    declared: Mapping[str, str | None], secrets_dir: str | Path | None = None
) -> Secrets:
    """Resolve each declared secret: env ``IMPASTO_SECRET_<NAME>``, then a file named after it
    in ``secrets_dir`` (default ``$IMPASTO_SECRETS_DIR`` or ``/secrets``), then its default."""
    folder = Path(secrets_dir or os.environ.get("IMPASTO_SECRETS_DIR") or DEFAULT_SECRETS_DIR)
    values: dict[str, str] = {}
    for name, default in declared.items():
        env = os.environ.get(_env_name(name))
        file = folder / name
        if env is not None:
            values[name] = env
        elif file.is_file():
            values[name] = file.read_text().rstrip("\r\n")
        elif default is not None:
            values[name] = default
    return Secrets(values)


class Redactor(logging.Filter):
    """Replaces secret values with ``***`` in text and in log records."""

    def __init__(self, secrets: Mapping[str, str] | None = None) -> None:
        super().__init__()
        # Very short values would redact ordinary text; they are still never logged by impasto.
        vals = sorted({v for v in (secrets or {}).values() if len(v) >= 4}, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, vals))) if vals else None

    def __call__(self, text: str) -> str:
        return self._pattern.sub("***", text) if self._pattern else text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._pattern is not None:
            record.msg = self(record.getMessage())
            record.args = None
            if record.exc_info:
                import traceback

                record.exc_text = self("".join(traceback.format_exception(*record.exc_info)))
                record.exc_info = None
        return True
