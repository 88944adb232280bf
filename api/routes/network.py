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

import re
from collections.abc import Mapping
from typing import Final, get_args

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from api.backend import Backend
from api.errors import ApiError, json_response
from api.routes import check_params, text_param, versioned
from pipeline.schema import Method
from tables.windows import VIEWS

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "MAX_OFFSET", "METHODS", "routes"]

DEFAULT_WINDOW: Final = "1m"
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1_000
MAX_OFFSET: Final = 1_000_000_000
METHODS: Final[tuple[str, ...]] = get_args(Method)
_PARAMS: Final = frozenset({"window", "service", "route", "method", "offset", "limit"})
_DIGITS: Final = re.compile(r"[0-9]{1,10}")


def _int_param(params: Mapping[str, str], name: str, *, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    value = int(raw) if _DIGITS.fullmatch(raw) else None
    if value is None or not low <= value <= high:
        shown = raw if len(raw) <= 20 else raw[:20] + "..."
        raise ApiError(
            422, f"invalid_{name}", f"{name} must be an integer in {low}..{high}, got {shown!r}"
        )
    return value


def routes(backend: Backend) -> list[BaseRoute]:
    async def network(request: Request) -> Response:
        params = check_params(request.query_params, _PARAMS)
        window = params.get("window", DEFAULT_WINDOW)
        if window not in VIEWS:
            raise ApiError(
                422,
                "invalid_window",
                f"window must be one of {', '.join(VIEWS)}, got {window[:20]!r}",
            )
        method = params.get("method")
        if method is not None and method not in METHODS:
            raise ApiError(
                422,
                "invalid_method",
                f"method must be one of {', '.join(METHODS)}, got {method[:20]!r}",
            )
        service = text_param(params, "service", max_length=64)
        route = text_param(params, "route", max_length=256)
        offset = _int_param(params, "offset", default=0, low=0, high=MAX_OFFSET)
        limit = _int_param(params, "limit", default=DEFAULT_LIMIT, low=1, high=MAX_LIMIT)
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
