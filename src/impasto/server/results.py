"""Results served back at a URL for a bounded time (OpenAI's ``response_format=url``).

An in-memory store: each result gets an unguessable token and lives ``ttl_s`` seconds;
past ``max_bytes`` in all, the oldest go first. It is what a single server needs; durable
stores (a folder, S3) plug in behind the same two methods.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class ResultsConfig(BaseModel):
    """Where results served by URL live, and for how long."""

    model_config = ConfigDict(extra="forbid")

    ttl_s: float = Field(3600, gt=0, description="How long a result URL answers.")
    max_bytes: int = Field(
        256 * 1024 * 1024, gt=0, description="Bytes kept in all (the oldest results go first)."
    )
    public_url: str | None = Field(
        None,
        description="The base URL clients reach this server at (behind a proxy); default: the "
        "request's own.",
        examples=["https://images.example.com"],
    )


@dataclass(frozen=True)
class Stored:
    data: bytes
    content_type: str
    expires: float  # time.monotonic()


class ResultStore:
    """Bytes by token, each for ``ttl_s`` seconds, at most ``max_bytes`` in all."""

    def __init__(self, ttl_s: float = 3600, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, Stored] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # encoders put from worker threads

    def put(self, data: bytes, content_type: str) -> str:
        """Keep ``data``; returns its token (unguessable: it is the URL's only secret)."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._expire(time.monotonic())
            while self._items and self._bytes + len(data) > self.max_bytes:
                self._drop(next(iter(self._items)))
            self._items[token] = Stored(data, content_type, time.monotonic() + self.ttl_s)
            self._bytes += len(data)
        return token

    def get(self, token: str) -> Stored | None:
        with self._lock:
            self._expire(time.monotonic())
            return self._items.get(token)

    def _expire(self, now: float) -> None:
        while self._items:
            token, item = next(iter(self._items.items()))
            if item.expires > now:
                return
            self._drop(token)

    def _drop(self, token: str) -> None:
        item = self._items.pop(token)
        self._bytes -= len(item.data)

    def __len__(self) -> int:
        return len(self._items)
