"""``GET /v1/health/live`` and ``GET /v1/health/ready`` (public even with a token set).

- live: 200 ``{"status": "live"}`` while the process serves HTTP at all.
- ready: 200 ``{"status": "ready", "reasons": [], "pipeline": {...}}`` when the backend
  reports nothing missing (Kafka connected, partitions assigned, tables recovered, sink
  able to write); else 503 with the same fields (``status`` ``"not_ready"``, every reason)
  and the uniform ``error`` object (code ``not_ready``).

Query parameters are ignored here: a probe must never fail on a stray one.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from api.backend import Backend
from api.errors import error_body, json_response, trace_id_of
from api.routes import versioned

__all__ = ["routes"]


def routes(backend: Backend) -> list[BaseRoute]:
    async def live(request: Request) -> Response:
        return json_response({"status": "live"})

    async def ready(request: Request) -> Response:
        reasons = [str(reason) for reason in backend.readiness()]
        pipeline = backend.pipeline_stats()
        if not reasons:
            return json_response({"status": "ready", "reasons": [], "pipeline": pipeline})
        body = error_body(
            "not_ready",
            "not ready: " + "; ".join(reasons),
            trace_id_of(request.scope),
            status="not_ready",
            reasons=reasons,
            pipeline=pipeline,
        )
        return json_response(body, 503, {"Retry-After": "1"})

    return [
        *versioned("/health/live", live, name="health_live"),
        *versioned("/health/ready", ready, name="health_ready"),
    ]
