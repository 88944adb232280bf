"""The worker's HTTP app (Starlette): a factory, no module-level clients.

This first cut serves what the metrics engine needs: the Prometheus scrape, the windowed
query over all workers' keys, and liveness/readiness. The API issue grows it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.openmetrics.exposition import (
    CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE,
)
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipeline.settings import WorkerSettings
from tables.windows import VIEWS

__all__ = ["create_api"]

_MAX_LIMIT = 1_000


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def create_api(settings: WorkerSettings, *, runtime: Any) -> Starlette:
    """``runtime``: the worker's :class:`agents.wiring.Runtime` (view, metrics, follower)."""

    async def metrics(request: Request) -> Response:
        registry = runtime.registry
        if "application/openmetrics-text" in request.headers.get("accept", ""):
            body = generate_openmetrics(registry)  # type: ignore[no-untyped-call]
            return Response(body, media_type=OPENMETRICS_CONTENT_TYPE)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def network(request: Request) -> Response:
        params = request.query_params
        window = params.get("window", "1m")
        if window not in VIEWS:
            return _error(422, "invalid_window", f"window must be one of {sorted(VIEWS)}")
        try:
            offset = int(params.get("offset", "0"))
            limit = int(params.get("limit", "100"))
        except ValueError:
            return _error(422, "invalid_pagination", "offset and limit must be integers")
        if offset < 0 or not 0 < limit <= _MAX_LIMIT:
            return _error(422, "invalid_pagination", f"offset >= 0 and 0 < limit <= {_MAX_LIMIT}")
        items, total = runtime.view.query(
            service=params.get("service"),
            route=params.get("route"),
            method=params.get("method"),
            view=window,
            offset=offset,
            limit=limit,
        )
        return JSONResponse(
            {
                "window": window,
                "total": total,
                "offset": offset,
                "limit": limit,
                "items": [dataclasses.asdict(item) for item in items],
            }
        )

    async def live(request: Request) -> Response:
        return JSONResponse({"status": "live"})

    async def ready(request: Request) -> Response:
        reasons = runtime.readiness()
        pipeline = runtime.pipeline_stats()
        if reasons:
            return JSONResponse(
                {"status": "not_ready", "reasons": reasons, "pipeline": pipeline}, status_code=503
            )
        return JSONResponse({"status": "ready", "pipeline": pipeline})

    routes = [
        Route("/metrics", metrics),
        Route("/v1/metrics/network", network),
        Route("/metrics/network", network),
        Route("/v1/health/live", live),
        Route("/health/live", live),
        Route("/v1/health/ready", ready),
        Route("/health/ready", ready),
    ]
    return Starlette(routes=routes)
