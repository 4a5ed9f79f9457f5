"""Prometheus metrics for the API (`GET /metrics`).

One registry per application, so several apps in one process (tests, `serve`) never collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily


class ApiMetrics:
    def __init__(self, writer_stats=None):
        self.registry = CollectorRegistry(auto_describe=True)
        self.ingested = Counter("anysentry_ingest_events_total", "Events accepted, by source and final verdict",
                                ["source", "verdict"], registry=self.registry)
        self.rejected = Counter("anysentry_ingest_rejections_total", "Ingest items rejected, by reason",
                                ["reason"], registry=self.registry)
        self.heartbeats = Counter("anysentry_collector_heartbeats_total", "Collector heartbeats recorded",
                                  registry=self.registry)
        self.judge_latency = Histogram("anysentry_judge_seconds_per_event", "L1 normalise+judge time per event, per request",
                                       buckets=(1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 5e-4, 1e-3, 1e-2), registry=self.registry)
        self.http_errors = Counter("anysentry_http_client_errors_total", "4xx answers, by status", ["status"],
                                   registry=self.registry)
        self.buffer_full = Counter("anysentry_ingest_buffer_full_total", "Requests answered 503 because the buffer was full",
                                   registry=self.registry)
        self.tier_calls = Counter("anysentry_tier_calls_total", "Deeper-tier calls, by tier and outcome",
                                  ["tier", "outcome"], registry=self.registry)
        self.worker_batches = Counter("anysentry_ingest_worker_batches_total",
                                      "Large ingest batches by where they were judged: `workers`, or `service` when "
                                      "the worker pool failed", ["judged_by"], registry=self.registry)
        self._writer_stats = writer_stats
        if writer_stats is not None:
            self.registry.register(_WriterCollector(writer_stats))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _WriterCollector:
    """Buffer depth and store write latency read from the writer at scrape time."""

    def __init__(self, stats):
        self._stats = stats

    def describe(self):
        return []

    def collect(self):
        stats = self._stats()
        yield GaugeMetricFamily("anysentry_buffer_events", "Accepted events waiting in the durable local buffer", value=stats.buffered_events)
        yield GaugeMetricFamily("anysentry_store_ready", "1 when the last store write succeeded", value=1 if stats.store_ready else 0)
        yield GaugeMetricFamily("anysentry_store_write_seconds", "Duration of the last batch insert", value=stats.last_write_latency)
        yield GaugeMetricFamily("anysentry_store_written_events", "Events written to the store since start", value=stats.total_written)
