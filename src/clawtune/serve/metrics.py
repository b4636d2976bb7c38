"""`GET /metrics`: Prometheus metrics with `prometheus_client` (its text format escapes every label value).

A `model` label is only ever a model id that exists (configured, loaded at run time, or an experiment); anything a
client typed that is not one is counted under `unknown`, so a request cannot write its own lines into the output or
grow the number of series without bound.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, float("inf"))


class _Live:
    """Values read at scrape time (queue length, engine counters, the log's state)."""

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self.read = read

    def collect(self) -> Any:
        values = self.read()
        yield GaugeMetricFamily("clawtune_queued", "Requests waiting for the engine.", value=values.get("queued", 0))
        yield GaugeMetricFamily(
            "clawtune_log_healthy", "1 when the request log's last write succeeded.", value=values.get("log_ok", 1)
        )
        yield GaugeMetricFamily(
            "clawtune_log_pending", "Log records waiting to be written.", value=values.get("log_pending", 0)
        )
        yield CounterMetricFamily(
            "clawtune_log_dropped",
            "Log records dropped because the disk refused them.",
            value=values.get("log_dropped", 0),
        )
        if "batches" in values:
            yield CounterMetricFamily(
                "clawtune_engine_batches",
                "Batches the engine ran (requests / batches = mean batch size).",
                value=values["batches"],
            )
            yield CounterMetricFamily(
                "clawtune_engine_batched_requests", "Requests the engine ran in batches.", value=values["batched"]
            )


class Metrics:
    """The gateway's counters, in a registry of its own (several gateways can live in one process, as in tests)."""

    def __init__(self, known: Callable[[str], bool], live: Callable[[], dict[str, Any]] | None = None) -> None:
        self.known = known
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "clawtune_requests", "Chat completion requests by model and HTTP status.", ["model", "status"], registry=r
        )
        self.tokens = Counter("clawtune_tokens", "Tokens by model and kind.", ["model", "kind"], registry=r)
        self.latency = Histogram("clawtune_request_seconds", "Request latency.", ["model"], buckets=BUCKETS, registry=r)
        self.rejected = Counter("clawtune_rejected", "Requests refused with 429 (too many in flight).", registry=r)
        self.unauthenticated = Counter(
            "clawtune_unauthenticated", "Requests without a valid API or admin key (counted, never logged).", registry=r
        )
        self.invalid_http = Counter(
            "clawtune_invalid_http",
            "Requests the HTTP parser refused, or that timed out before their body.",
            ["reason"],
            registry=r,
        )
        self.disallowed_host = Counter(
            "clawtune_disallowed_host", "Requests whose Host header is not in the allow-list.", registry=r
        )
        self.in_flight = Gauge("clawtune_in_flight", "Chat completion requests being served.", registry=r)
        if live is not None:
            r.register(_Live(live))

    def label(self, model: str | None) -> str:
        return model if model and self.known(model) else "unknown"

    def observe(self, model: str | None, status: int, latency: float, prompt: int, completion: int) -> None:
        label = self.label(model)
        self.requests.labels(label, str(status)).inc()
        if prompt:
            self.tokens.labels(label, "prompt").inc(prompt)
        if completion:
            self.tokens.labels(label, "completion").inc(completion)
        self.latency.labels(label).observe(latency)

    def render(self) -> bytes:
        return generate_latest(self.registry)
