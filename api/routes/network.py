"""``GET /v1/metrics/network``: one page of windowed stats per key, from the query layer.

Reads :meth:`tables.query.SummaryView.query`, which holds every worker's cells (the
changelog follower feeds it), so any worker answers for all keys. Keys are
``service|method|route``, sorted; each item is a :class:`tables.query.WindowStats`.

Parameters (all optional; anything else, a repeated one or a bad value is 422 with a
specific ``code``):

| name | default | rule | error code |
|---|---|---|---|
| ``window`` | ``1m`` | one of ``10s``, ``1m``, ``5m`` | ``invalid_window`` |
| ``service`` | all | exact service, 1..64 chars | ``invalid_service`` |
| ``route`` | all | exact route template, 1..256 chars | ``invalid_route`` |
| ``method`` | all | an HTTP method in capitals | ``invalid_method`` |
| ``offset`` | 0 | integer 0..1,000,000,000 | ``invalid_offset`` |
| ``limit`` | 100 | integer 1..1,000 | ``invalid_limit`` |
"""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from api.backend import Backend
from api.errors import json_response
from api.routes import (
    METHODS,
    check_params,
    int_param,
    method_param,
    text_param,
    versioned,
    window_param,
)

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "MAX_OFFSET", "METHODS", "routes"]

DEFAULT_WINDOW: Final = "1m"
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1_000
MAX_OFFSET: Final = 1_000_000_000
_PARAMS: Final = frozenset({"window", "service", "route", "method", "offset", "limit"})


def routes(backend: Backend) -> list[BaseRoute]:
    async def network(request: Request) -> Response:
        params = check_params(request.query_params, _PARAMS)
        window = window_param(params, default=DEFAULT_WINDOW)
        method = method_param(params)
        service = text_param(params, "service", max_length=64)
        route = text_param(params, "route", max_length=256)
        offset = int_param(params, "offset", default=0, low=0, high=MAX_OFFSET)
        limit = int_param(params, "limit", default=DEFAULT_LIMIT, low=1, high=MAX_LIMIT)
        view = backend.view
        items, total = view.query(
            service=service, route=route, method=method, view=window, offset=offset, limit=limit
        )
        return json_response(
            {
                "window": window,
                "stream_time": view.stream_time,
                "total": total,
                "offset": offset,
                "limit": limit,
                "items": items,
            }
        )

    return versioned("/metrics/network", network, name="metrics_network")
