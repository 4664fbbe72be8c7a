"""Prometheus metrics for one server, in its own registry (no process-wide globals)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    """Request counts and latency by endpoint and outcome, plus cancellations and queue depth."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._steps: dict[str, Any] = {}
        self.requests = Counter(
            "impasto_requests",
            "Predictions by endpoint and outcome (ok or the error type).",
            ["endpoint", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "impasto_request_seconds",
            "Time from admission to result, by endpoint.",
            ["endpoint"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.canceled = Counter(
            "impasto_canceled",
            "Requests stopped early because the client went away or the deadline passed.",
            ["endpoint", "reason"],
            registry=self.registry,
        )
        self.steps = Counter(
            "impasto_progress_steps",
            "Progress steps reported by models (e.g. denoising steps), by endpoint.",
            ["endpoint"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "impasto_batch_size",
            "Inputs merged into one batched model call, by endpoint.",
            ["endpoint"],
            registry=self.registry,
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
        )
        self.queue = Gauge(
            "impasto_queue_depth", "Requests waiting for a model slot.", registry=self.registry
        )

    def observe(self, endpoint: str, outcome: str, seconds: float) -> None:
        key = (endpoint, outcome)
        children = self._children.get(key)
        if children is None:  # label lookups are slow; keep the children per endpoint
            children = (self.requests.labels(endpoint, outcome), self.latency.labels(endpoint))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if outcome in ("canceled", "timeout"):
            self.canceled.labels(endpoint, outcome).inc()

    def subscribe(self, ctx: Any, endpoint: str) -> None:
        """Count the progress events of one request."""
        counter = self._steps.get(endpoint)
        if counter is None:
            counter = self._steps[endpoint] = self.steps.labels(endpoint)
        ctx.subscribe(lambda event: counter.inc() if event.kind == "progress" else None)

    def render(self) -> bytes:
        return generate_latest(self.registry)
