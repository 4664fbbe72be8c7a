"""Prometheus metrics for one server, in its own registry (no process-wide globals).

Every series has a ``model`` label, so several models behind one server stay apart. Outcomes
are ``ok`` or the error type a request ended with (``invalid_input``, ``too_large``...,
``overloaded`` and ``not_ready`` for requests refused at admission included).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .context import Event

_CANCEL_OUTCOMES = ("timeout", "canceled", "shutting_down")


class Metrics:
    """Request counts and latency by model, endpoint and outcome; cancellations by reason;
    progress steps; batch sizes; and the queue depth each model's autoscaler reads."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self.requests = Counter(
            "impasto_requests",
            "Predictions by model, endpoint and outcome (ok or the error type).",
            ["model", "endpoint", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "impasto_request_seconds",
            "Time from admission to the end of a prediction, by model and endpoint.",
            ["model", "endpoint"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.canceled = Counter(
            "impasto_canceled",
            "Predictions stopped early, by reason: timeout, disconnected, shutdown, canceled.",
            ["model", "endpoint", "reason"],
            registry=self.registry,
        )
        self.steps = Counter(
            "impasto_progress_steps",
            "Progress steps reported by models (e.g. denoising steps).",
            ["model", "endpoint"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "impasto_batch_size",
            "Inputs merged into one batched model call.",
            ["model", "endpoint"],
            registry=self.registry,
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
        )
        self.queue = Gauge(
            "impasto_queue_depth",
            "Admitted predictions not yet running (waiting for a slot or a batch), by model.",
            ["model"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "impasto_in_flight",
            "Admitted predictions not yet ended (waiting or running), by model.",
            ["model"],
            registry=self.registry,
        )
        self._engines = _EngineCollector()
        self.registry.register(self._engines)

    def observe(
        self, model: str, endpoint: str, outcome: str, seconds: float, reason: str | None = None
    ) -> None:
        key = (model, endpoint, outcome)
        children = self._children.get(key)
        if children is None:  # label lookups are slow; keep the children
            children = (
                self.requests.labels(model, endpoint, outcome),
                self.latency.labels(model, endpoint),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if outcome in _CANCEL_OUTCOMES:
            self.canceled.labels(model, endpoint, reason or outcome).inc()

    def refused(self, model: str, endpoint: str, outcome: str) -> None:
        """A request refused before it became a prediction (429, 503, 404...)."""
        self.requests.labels(model, endpoint, outcome).inc()

    def listener(self, model: str) -> Callable[[Any, Event], None]:
        """A runner-level listener counting the progress events of ``model``'s predictions."""
        children: dict[str, Any] = {}

        def on_event(prediction: Any, event: Event) -> None:
            if event.kind == "progress":
                counter = children.get(prediction.endpoint)
                if counter is None:
                    counter = children[prediction.endpoint] = self.steps.labels(
                        model, prediction.endpoint
                    )
                counter.inc()

        return on_event

    def observe_batch(self, model: str, endpoint: str, size: int) -> None:
        self.batch_size.labels(model, endpoint).observe(size)

    def track(
        self, model: str, queued: Callable[[], float], in_flight: Callable[[], float]
    ) -> None:
        """Report ``model``'s queue depth and predictions in flight, read at each scrape
        (nothing to update on the request path)."""
        self.queue.labels(model).set_function(queued)
        self.in_flight.labels(model).set_function(in_flight)

    def track_engine(self, model: str, stats: Callable[[], dict[str, float]]) -> None:
        """Report the scheduler a model runs itself (continuous batching), read at each
        scrape: ``stats()`` gives ``active``, ``queued``, ``steps`` and ``rows`` (empty
        while the model has none)."""
        self._engines.sources[model] = stats

    def render(self) -> bytes:
        """impasto's metrics, then those the model registered on prometheus_client's
        default registry (and that registry's process and platform collectors)."""
        return generate_latest(self.registry) + generate_latest(REGISTRY)


class _EngineCollector:
    """Continuous batching engines' own figures, read from them at scrape time."""

    def __init__(self) -> None:
        self.sources: dict[str, Callable[[], dict[str, float]]] = {}

    def describe(self) -> list[Any]:
        return []  # read at scrape time only

    def collect(self) -> Any:
        active = GaugeMetricFamily(
            "impasto_engine_active",
            "Requests in a model's running denoising batch (continuous batching).",
            labels=["model"],
        )
        queued = GaugeMetricFamily(
            "impasto_engine_queued",
            "Requests waiting for room in that batch (max_batch_size, max_batch_pixels).",
            labels=["model"],
        )
        steps = CounterMetricFamily(
            "impasto_engine_steps",
            "Batched UNet steps run; rows/steps is the mean batch.",
            labels=["model"],
        )
        rows = CounterMetricFamily(
            "impasto_engine_rows",
            "UNet batch rows run over those steps (one per image, two with guidance).",
            labels=["model"],
        )
        seen = False
        for model, stats in list(self.sources.items()):
            figures = stats()
            if not figures:
                continue
            seen = True
            active.add_metric([model], figures["active"])
            queued.add_metric([model], figures["queued"])
            steps.add_metric([model], figures["steps"])
            rows.add_metric([model], figures["rows"])
        if seen:  # a server without an engine shows none of these
            yield from (active, queued, steps, rows)
