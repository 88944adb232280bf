"""``GET /v1/metrics`` (and ``/metrics``): the Prometheus scrape of the worker's registry.

Prometheus text format by default (prometheus_client's ``CONTENT_TYPE_LATEST``); OpenMetrics
when the ``Accept`` header asks for ``application/openmetrics-text``. Behind the bearer token
when one is set (configure the scrape job's ``authorization``).

:class:`ApiCollector` adds the API's own figures to that registry while the app runs
(registered by the app's lifespan):

- ``egresswatch_api_requests_total{code}``: finished requests by HTTP status code (429,
  401 and 504 count the rate limiter, auth and timeout refusals);
- ``egresswatch_api_rate_limit_clients``: client buckets held (at most ``api_max_clients``);
- ``egresswatch_api_rate_limit_evictions_total``: idle buckets dropped to make room;
- ``egresswatch_api_rate_limit_overflow_total``: requests charged to the shared overflow
  bucket because the table was full of active clients.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import (
    CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE,
)
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from api.backend import Backend
from api.middleware.ratelimit import TokenBuckets
from api.middleware.tracing import RequestCounts
from api.routes import versioned

__all__ = ["ApiCollector", "routes"]


class ApiCollector:
    """A Prometheus collector over the API's counters (read at scrape time)."""

    def __init__(self, counts: RequestCounts, buckets: TokenBuckets | None) -> None:
        self._counts = counts
        self._buckets = buckets

    def describe(self) -> list[Metric]:
        return list(self._families(empty=True))

    def collect(self) -> Iterator[Metric]:
        return self._families(empty=False)

    def _families(self, *, empty: bool) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "egresswatch_api_requests",
            "API requests finished, by HTTP status code",
            labels=["code"],
        )
        if not empty:
            for code, n in sorted(self._counts.by_code.items()):
                requests.add_metric([str(code)], n)
        yield requests
        buckets = self._buckets
        yield GaugeMetricFamily(
            "egresswatch_api_rate_limit_clients",
            "Client token buckets held by the API rate limiter",
            value=0 if empty or buckets is None else len(buckets),
        )
        yield CounterMetricFamily(
            "egresswatch_api_rate_limit_evictions",
            "Idle client buckets evicted to make room for new clients",
            value=0 if empty or buckets is None else buckets.evicted_total,
        )
        yield CounterMetricFamily(
            "egresswatch_api_rate_limit_overflow",
            "Requests charged to the shared overflow bucket (bucket table full)",
            value=0 if empty or buckets is None else buckets.overflow_total,
        )


def routes(backend: Backend) -> list[BaseRoute]:
    async def metrics(request: Request) -> Response:
        registry = backend.registry
        if "application/openmetrics-text" in request.headers.get("accept", ""):
            body = generate_openmetrics(registry)  # type: ignore[no-untyped-call]
            return Response(body, media_type=OPENMETRICS_CONTENT_TYPE)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return versioned("/metrics", metrics, name="metrics")
