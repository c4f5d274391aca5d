"""Prometheus metrics of one service instance (its own registry, served at GET /metrics)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from edge_guard.result import ClassificationResult

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class ServiceMetrics:
    """Requests, labels, tokens, queue depth, cache hits and request latency."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "edge_guard_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.labels = Counter(
            "edge_guard_labels", "Labels returned, by verdict", ["verdict"], registry=r
        )
        self.cache_hits = Counter(
            "edge_guard_cache_hits", "Labels answered from the store", registry=r
        )
        self.tokens = Counter(
            "edge_guard_tokens", "Model tokens processed for new labels", ["kind"], registry=r
        )
        self.queue_depth = Gauge(
            "edge_guard_queue_depth", "Labels requested and not yet returned", registry=r
        )
        self.jobs = Gauge("edge_guard_jobs_in_flight", "Requests being classified", registry=r)
        self.latency = Histogram(
            "edge_guard_request_seconds",
            "Request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    # -- called by ServiceCore (worker threads) -------------------------------------------
    def job_started(self, n_labels: int) -> None:
        self.jobs.inc()
        self.queue_depth.inc(n_labels)

    def result(self, res: ClassificationResult) -> None:
        self.labels.labels(verdict=str(res.verdict)).inc()
        self.queue_depth.dec()
        if res.cached:
            self.cache_hits.inc()
            return
        t = res.model_response.timings if res.model_response else None
        if t is not None:
            self.tokens.labels(kind="prompt").inc(t.prompt_tokens)
            self.tokens.labels(kind="prompt_cached").inc(t.cached_tokens)
            self.tokens.labels(kind="output").inc(t.output_tokens)

    def job_done(self, n_labels: int, results: list[list[Any]]) -> None:
        done = sum(r is not None for row in results for r in row)
        self.queue_depth.dec(n_labels - done)
        self.jobs.dec()

    # -- called by the HTTP layer ------------------------------------------------------------
    def request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
