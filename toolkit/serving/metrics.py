"""Prometheus metrics of the RAG endpoint, in a registry of its own (several apps may share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Stage latencies span sub-millisecond (cache hits, search) to seconds (generation on CPU).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("rag_requests_total", "Requests by route and status code", ["route", "status"],
                                registry=self.registry)
        self.stage = Histogram("rag_stage_latency_seconds", "Latency per stage (embed, search, prompt, llm_ttft, "
                               "llm_total, total)", ["stage"], buckets=BUCKETS, registry=self.registry)
        self.cache_hits = Counter("rag_cache_hits_total", "Hot-query cache hits", registry=self.registry)
        self.cache_misses = Counter("rag_cache_misses_total", "Hot-query cache misses", registry=self.registry)
        self.cache_errors = Counter("toolkit_cache_errors_total", "Query-cache backend failures (Redis down, slow or "
                                    "refusing), each served as a cache miss", registry=self.registry)
        self.index_reloads = Counter("rag_index_reloads_total", "Index reloads after an update of the index "
                                     "directory (result: ok, failed; a failed one keeps the old index)", ["result"],
                                     registry=self.registry)
        self.in_flight = Gauge("rag_in_flight_requests", "Requests being processed", registry=self.registry)
        self.rejected = Counter("rag_rejected_total", "Requests refused or cut off (reason: concurrency, auth, "
                                "engine, deadline)", ["reason"], registry=self.registry)

    def observe_timings(self, timings_ms: dict[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self.stage.labels(stage).observe(ms / 1000)

    def render(self) -> bytes:
        return generate_latest(self.registry)
