"""Job webhooks: signed per Standard Webhooks, sent off the inference path.

- **Signing** (https://www.standardwebhooks.com): ``webhook-id``, ``webhook-timestamp`` and
  ``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` with the secret
  ``webhook_secret`` (``whsec_<base64>``, as Replicate hands them out). Without a secret,
  webhooks go out unsigned (a warning says so at start).
- **Safety**: a target must be http(s) and resolve to public addresses unless
  ``jobs.webhooks.allow_private_urls``; the request goes to the address that was checked
  (the same guard media URLs get, :func:`impasto.media.decode.checked_addresses`).
- **Delivery**: ``start``, ``output`` and ``logs`` are fire-and-forget (one try, dropped
  when too many are in flight); ``completed`` is written to the job store when the job
  ends and retried with exponential backoff on network errors, 408, 429 and 5xx until
  ``max_attempts``, by whichever server's loop finds it due, across restarts.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from .. import __version__
from ..config import WebhooksConfig
from ..errors import ConfigError, ImpastoError, InputError
from ..media.decode import checked_addresses
from .records import Delivery

log = logging.getLogger("impasto.jobs.webhooks")

SETTING = "jobs.webhooks.allow_private_urls"
MAX_IN_FLIGHT = 64  # fire-and-forget webhooks sent at once; more are dropped


class Signer:
    """Standard Webhooks signatures with one secret (None: unsigned)."""

    def __init__(self, secret: str | None) -> None:
        self.key: bytes | None = None
        if secret:
            raw = secret.strip().removeprefix("whsec_")
            try:
                self.key = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError(
                    "the webhook secret is not base64 (optionally prefixed whsec_); make one "
                    "with: python -c \"import base64,os; print('whsec_' + "
                    'base64.b64encode(os.urandom(24)).decode())"',
                    field="jobs.webhooks.secret",
                ) from None

    def headers(self, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        headers = {"webhook-id": msg_id, "webhook-timestamp": stamp}
        if self.key is not None:
            signed = f"{msg_id}.{stamp}.".encode() + body
            mac = hmac.new(self.key, signed, hashlib.sha256).digest()
            headers["webhook-signature"] = "v1," + base64.b64encode(mac).decode()
        return headers


def check_url(url: str, *, allow_private: bool, field: str = "webhook") -> list[str]:
    """The addresses to send to, or an InputError naming ``field`` (blocking: DNS)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise InputError(f"{field}: not a URL: {exc}", field=field) from None
    return checked_addresses(parsed, field=field, allow_private=allow_private, setting=SETTING)


@dataclass(frozen=True)
class Sent:
    ok: bool
    retry: bool  # worth trying again later
    error: str | None = None


class WebhookSender:
    """POSTs signed JSON bodies to checked addresses."""

    def __init__(self, config: WebhooksConfig, signer: Signer) -> None:
        self.config = config
        self.signer = signer
        self._client = httpx.AsyncClient(
            timeout=config.timeout_s, trust_env=False, follow_redirects=False
        )

    async def send(self, url: str, body: bytes, msg_id: str | None = None) -> Sent:
        msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
        try:
            addresses = await asyncio.to_thread(
                check_url, url, allow_private=self.config.allow_private_urls
            )
        except ImpastoError as exc:
            return Sent(False, False, exc.message)
        target = httpx.URL(url)
        headers = {
            "content-type": "application/json",
            "user-agent": f"impasto/{__version__}",
            "host": target.netloc.decode("ascii"),
            **self.signer.headers(msg_id, body),
        }
        error = "no address"
        for address in addresses:
            request = self._client.build_request(
                "POST",
                target.copy_with(host=address.split("%")[0]),
                content=body,
                headers=headers,
                extensions={"sni_hostname": target.host},
            )
            try:
                response = await self._client.send(request)
            except httpx.ConnectError as exc:
                error = f"cannot connect: {exc}"
                continue
            except httpx.HTTPError as exc:
                return Sent(False, True, f"{type(exc).__name__}: {exc}")
            await response.aclose()
            code = response.status_code
            if 200 <= code < 300:
                return Sent(True, False)
            retry = code in (408, 429) or code >= 500
            return Sent(False, retry, f"the receiver answered HTTP {code}")
        return Sent(False, True, error)

    async def aclose(self) -> None:
        await self._client.aclose()


Render = Callable[[Delivery], Awaitable[bytes | None]]


class Deliveries:
    """The loop that sends terminal webhooks from the job store, and the fire-and-forget
    sender of the others; neither ever runs on a prediction's path."""

    def __init__(
        self,
        sender: WebhookSender,
        db: Callable[..., Awaitable[Any]],
        store: Any,
        render: Render,
        *,
        poll_s: float,
    ) -> None:
        self.sender = sender
        self.config = sender.config
        self.db = db
        self.store = store
        self.render = render
        self.poll_s = poll_s
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self.sent = 0  # terminal webhooks delivered by this server

    def wake(self) -> None:
        self._wake.set()

    def fire(self, url: str, body: bytes) -> None:
        """Send a non-terminal event once, if not too many are already in flight."""
        if len(self._tasks) >= MAX_IN_FLIGHT:
            log.warning("too many webhooks in flight; dropping one to %s", url)
            return
        self._spawn(self._fire(url, body))

    async def _fire(self, url: str, body: bytes) -> None:
        result = await self.sender.send(url, body)
        if not result.ok:
            log.info("webhook to %s not delivered: %s", url, result.error)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self) -> None:
        lock_s = self.config.timeout_s * 2 + 5
        while True:
            try:
                due = await self.db(
                    self.store.due_deliveries, now=time.time(), limit=16, lock_s=lock_s
                )
            except Exception:
                log.exception("cannot read pending webhooks; retrying")
                due = []
            for item in due:
                self._spawn(self._deliver(item))
            if len(due) == 16:
                continue
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)

    async def _deliver(self, item: Delivery) -> None:
        try:
            body = await self.render(item)
        except Exception:
            log.exception("webhook %s for job %s: cannot render it", item.id, item.job_id)
            body = None
        now = time.time()
        if body is None:  # the job is gone (pruned): nothing left to say
            await self.db(self.store.delivered, item.id, ok=False, error="job gone", retry_at=None, now=now)  # fmt: skip
            return
        result = await self.sender.send(item.url, body, item.id)
        tries = item.attempts + 1
        retry_at = None
        if not result.ok and result.retry and tries < self.config.max_attempts:
            delay = min(self.config.max_backoff_s, self.config.backoff_s * 2 ** (tries - 1))
            retry_at = time.time() + delay
        if result.ok:
            self.sent += 1
        else:
            level = logging.INFO if retry_at is not None else logging.WARNING
            log.log(
                level,
                "webhook %s (%s of job %s) to %s failed (try %d of %d): %s%s",
                item.id,
                item.event,
                item.job_id,
                item.url,
                tries,
                self.config.max_attempts,
                result.error,
                "; will retry" if retry_at is not None else "; giving up",
            )
        await self.db(
            self.store.delivered,
            item.id,
            ok=result.ok,
            error=result.error,
            retry_at=retry_at,
            now=time.time(),
        )
        if retry_at is not None:
            loop = asyncio.get_running_loop()
            loop.call_later(max(0.0, retry_at - time.time()), self.wake)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.sender.aclose()
