"""Where a job's media go, and the URLs clients fetch them by.

A result store is a folder or any fsspec URL (``s3://bucket/prefix`` with s3fs installed);
each job's files sit under ``<root>/<job id>/``. The job itself keeps a reference
(``impasto-result:<job id>/<name>``), turned into a URL each time the job is shown:

- a store that presigns (S3) gives its own presigned URL, valid ``url_ttl_s``;
- any other is served by impasto at ``/files/<job id>/<name>?expires=...&sig=...``, an
  HMAC of the path and expiry with a key every server of the job store shares.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import mimetypes
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import fsspec
from fsspec.implementations.local import LocalFileSystem

MARKER = "impasto-result:"
_PRESIGNS = ("s3", "s3a", "gcs", "gs")


class ResultFiles:
    """A job result store at ``url`` (see the module docstring)."""

    def __init__(self, url: str, *, ttl_s: float = 3600) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.root = self.root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)
        protocol = self.fs.protocol
        self.presigns = (protocol if isinstance(protocol, str) else protocol[0]) in _PRESIGNS
        self._key = b""

    def use_key(self, key: str) -> None:
        """The key that signs ``/files`` URLs (shared by the servers of one job store)."""
        self._key = key.encode()

    # writing --------------------------------------------------------------------------------
    def put(self, job_id: str, name: str, data: bytes, content_type: str | None = None) -> str:
        """Store ``data`` as ``name`` of ``job_id``; returns the reference the job keeps."""
        path = self._path(job_id, name)
        if self.local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.fs.pipe_file(path, data)
        elif self.presigns and content_type:
            self.fs.pipe_file(path, data, ContentType=content_type)
        else:
            self.fs.pipe_file(path, data)
        return f"{MARKER}{job_id}/{name}"

    def delete(self, job_id: str) -> None:
        path = f"{self.root}/{job_id}"
        try:
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass

    def _path(self, job_id: str, name: str) -> str:
        if "/" in name or "/" in job_id or name.startswith("."):
            raise ValueError(f"not a result name: {job_id}/{name}")
        return f"{self.root}/{job_id}/{name}"

    # reading --------------------------------------------------------------------------------
    def read(self, job_id: str, name: str) -> tuple[bytes, str]:
        """The bytes of a stored result and their content type (FileNotFoundError)."""
        data = self.fs.cat_file(self._path(job_id, name))
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return data, kind

    def local_path(self, job_id: str, name: str) -> str | None:
        return self._path(job_id, name) if self.local else None

    def location(self, ref: str) -> str:
        """Where a reference lives in the store itself (``file:///...``, ``s3://...``)."""
        key = ref.removeprefix(MARKER)
        if self.local:
            return Path(f"{self.root}/{key}").as_uri()
        return self.fs.unstrip_protocol(f"{self.root}/{key}")

    # URLs -----------------------------------------------------------------------------------
    def url_for(self, ref: str, base_url: str | None) -> str:
        """A URL clients can fetch ``ref`` by, valid ``ttl_s`` seconds."""
        key = ref.removeprefix(MARKER)
        if self.presigns:
            return self.fs.sign(f"{self.root}/{key}", expiration=int(self.ttl_s))
        expires = int(time.time() + self.ttl_s)
        sig = self.signature(key, expires)
        base = (base_url or "").rstrip("/")
        return f"{base}/files/{quote(key)}?expires={expires}&sig={sig}"

    def signature(self, key: str, expires: int) -> str:
        mac = hmac.new(self._key, f"{key}\n{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def check(self, key: str, expires: str, sig: str) -> bool:
        """Whether a ``/files`` URL is genuine and not expired."""
        if not self._key or not expires.isdigit() or int(expires) < time.time():
            return False
        return hmac.compare_digest(self.signature(key, int(expires)), sig)


def with_urls(value: Any, to_url: Callable[[str], str]) -> Any:
    """``value`` with every result reference in it replaced by ``to_url(reference)``."""
    if isinstance(value, str):
        return to_url(value) if value.startswith(MARKER) else value
    if isinstance(value, list):
        return [with_urls(v, to_url) for v in value]
    if isinstance(value, dict):
        return {k: with_urls(v, to_url) for k, v in value.items()}
    return value
