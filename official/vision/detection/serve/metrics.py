"""The Prometheus metrics of one server, in a registry of its own (two servers in one process,
as in the tests, keep separate counts).

Every response is counted and timed by its route and status in an ASGI middleware
(``MetricsMiddleware``), the errors of the routes included; paths that are no route are
counted as "other", so a scan of random paths cannot grow the label set.
"""
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# seconds: from a millisecond (a refusal) to a queue of large models
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)


class ServerMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "fcos_request_duration_seconds", "time from a request's arrival to its response, "
            "by route and HTTP status", ["route", "status"], buckets=LATENCY_BUCKETS,
            registry=self.registry)
        self.responses = Counter("fcos_responses", "responses by route and HTTP status",
                                 ["route", "status"], registry=self.registry)
        self.queue_depth = Gauge(
            "fcos_queue_depth", "detection requests holding a place in the queue (read, "
            "decoded or waiting for the engine)", registry=self.registry)
        self.inferences = Counter("fcos_inferences", "images the network ran on",
                                  registry=self.registry)
        self.batch_size = Histogram("fcos_batch_size", "images per forward of the network",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.engine_seconds = Histogram("fcos_engine_duration_seconds",
                                        "time of one forward of the network (one batch)",
                                        buckets=LATENCY_BUCKETS, registry=self.registry)
        self.dropped = Counter(
            "fcos_dropped_jobs", "detection jobs dropped before the network ran them, by "
            "reason (client_gone, deadline, shutdown)", ["reason"], registry=self.registry)

    def observe_batch(self, size, seconds):
        self.inferences.inc(size)
        self.batch_size.observe(size)
        self.engine_seconds.observe(seconds)

    def exposition(self):
        """(body, content type) of the metrics in Prometheus' text format."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts and times every HTTP response by route (one of ``routes``, else "other")."""

    def __init__(self, app, metrics, routes):
        self.app, self.metrics, self.routes = app, metrics, frozenset(routes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in self.routes else "other"
        started, status = time.perf_counter(), [500]  # an exception without a response: 500

        async def send_recording_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            self.metrics.request_seconds.labels(route, str(status[0])).observe(
                time.perf_counter() - started)
            self.metrics.responses.labels(route, str(status[0])).inc()
