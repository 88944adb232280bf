"""The worker's HTTP app: a Starlette factory, served by uvicorn on the worker's loop.

:func:`create_api` builds the route list, the middleware list and a lifespan from the
settings and a :class:`~api.backend.Backend`; there are no module-level clients.

Routes (each ``/v1/<path>`` also answers at the seed's ``/<path>``): ``health/live``,
``health/ready``, ``metrics/network``, ``metrics/network/history``, ``alerts``,
``resilience/state``, ``metrics``; plus
``/v1/openapi.json`` and whatever ``extra_routes`` the caller adds (the WebSocket and the
dashboard), which get the same middleware.

Middleware, outermost first, all pure ASGI:

1. tracing: trace id on every response and log line, 500 for unhandled errors;
2. rate limit per client (token bucket, bounded table), 429;
3. bearer auth on all but health, when ``settings.api_token`` is set, 401;
4. server-side timeout (HTTP only), 504.

Errors of every kind share one JSON body (``api.errors``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Final

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from api import openapi
from api.alert_log import AlertLog
from api.backend import Backend
from api.errors import exception_handlers
from api.middleware.auth import BearerAuthMiddleware
from api.middleware.ratelimit import RateLimitMiddleware, TokenBuckets
from api.middleware.timeout import TimeoutMiddleware
from api.middleware.tracing import RequestCounts, TracingMiddleware
from api.routes import alerts as alerts_route
from api.routes import health, history, metrics, network, resilience
from pipeline.logs import log_fields
from pipeline.settings import SettingsError, WorkerSettings

__all__ = ["create_api"]

_log: Final = logging.getLogger("egresswatch.api")


def _check(settings: WorkerSettings) -> None:
    if not (settings.api_rate_per_s >= 0 and math.isfinite(settings.api_rate_per_s)):
        raise SettingsError(
            "api_rate_per_s must be >= 0 (0 turns rate limiting off), "
            f"got {settings.api_rate_per_s}"
        )
    if settings.api_burst < 1:
        raise SettingsError(f"api_burst must be >= 1, got {settings.api_burst}")
    if settings.api_max_clients < 1:
        raise SettingsError(f"api_max_clients must be >= 1, got {settings.api_max_clients}")
    if not (settings.api_timeout_s > 0 and math.isfinite(settings.api_timeout_s)):
        raise SettingsError(f"api_timeout_s must be > 0, got {settings.api_timeout_s}")


def create_api(
    settings: WorkerSettings,
    *,
    backend: Backend,
    extra_routes: Sequence[BaseRoute] = (),
    clock: Callable[[], float] = time.monotonic,
    alerts: AlertLog | None = None,
) -> Starlette:
    """The API of one worker. ``clock`` drives the rate limiter's buckets (tests pass a
    fake one); ``alerts`` is the log ``GET /v1/alerts`` reads (the worker's live feed fills
    it; an empty one without it). Raises :class:`~pipeline.settings.SettingsError` for
    unusable settings."""
    _check(settings)
    counts = RequestCounts()
    buckets = (
        TokenBuckets(
            rate_per_s=settings.api_rate_per_s,
            burst=settings.api_burst,
            max_clients=settings.api_max_clients,
            clock=clock,
        )
        if settings.api_rate_per_s > 0
        else None
    )
    collector = metrics.ApiCollector(counts, buckets)

    middleware = [Middleware(TracingMiddleware, counts=counts)]
    if buckets is not None:
        proxies = (settings.api_trusted_proxies or "").split(",")
        trusted = tuple(p.strip() for p in proxies if p.strip())
        middleware.append(Middleware(RateLimitMiddleware, buckets=buckets, trusted_proxies=trusted))
    if settings.api_token:
        middleware.append(Middleware(BearerAuthMiddleware, token=settings.api_token))
    middleware.append(Middleware(TimeoutMiddleware, timeout_s=settings.api_timeout_s))

    routes: list[BaseRoute] = [
        *health.routes(backend),
        *network.routes(backend),
        *history.routes(backend),
        *alerts_route.routes(alerts if alerts is not None else AlertLog()),
        *resilience.routes(backend),
        *metrics.routes(backend),
        *openapi.routes(),
        *extra_routes,
    ]

    running = 0  # lifespans of this app running at once (one per server; tests may nest)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal running
        registry = backend.registry
        running += 1
        if running == 1:
            registry.register(collector)
        _log.info(
            "api started",
            extra=log_fields(
                auth=bool(settings.api_token),
                rate_per_s=settings.api_rate_per_s,
                timeout_s=settings.api_timeout_s,
            ),
        )
        try:
            yield
        finally:
            running -= 1
            if running == 0:
                registry.unregister(collector)

    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
