"""``GET /v1/metrics/network/history``: a key's recent windows over time, for charts.

For each key matching the filters (sorted, at most ``limit`` of them), one point per
10-second bucket over the last ``minutes`` minutes of stream time: the ``window`` view
ending at that bucket (:meth:`tables.query.SummaryView.stats` with ``end``). Points
without requests are left out. The view holds 15 minutes of buckets
(``tables.windows.RETENTION_S``), hence ``minutes <= 15``.

Bounded work: at most ``MAX_KEYS x 90`` views per request; the ends are visited oldest
first, so each view slides the previous one's cached prefix instead of merging its cells
again.

Parameters (all optional; anything else, a repeated one or a bad value is 422):

| name | default | rule | error code |
|---|---|---|---|
| ``window`` | ``1m`` | one of ``10s``, ``1m``, ``5m`` | ``invalid_window`` |
| ``service`` | all | exact service, 1..64 chars | ``invalid_service`` |
| ``route`` | all | exact route template, 1..256 chars | ``invalid_route`` |
| ``method`` | all | an HTTP method in capitals | ``invalid_method`` |
| ``minutes`` | 10 | integer 1..15 | ``invalid_minutes`` |
| ``limit`` | 5 | integer 1..20 (keys) | ``invalid_limit`` |
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from api.backend import Backend
from api.errors import json_response
from api.routes import check_params, int_param, method_param, text_param, versioned, window_param
from tables.query import WindowStats
from tables.windows import BUCKET_S, RETENTION_S

__all__ = ["DEFAULT_KEYS", "DEFAULT_MINUTES", "MAX_KEYS", "MAX_MINUTES", "POINT_FIELDS", "routes"]

DEFAULT_MINUTES: Final = 10
MAX_MINUTES: Final = RETENTION_S // 60
DEFAULT_KEYS: Final = 5
MAX_KEYS: Final = 20
POINT_FIELDS: Final = (
    "end",
    "requests",
    "rate_per_s",
    "errors",
    "error_rate",
    "timeouts",
    "p50_ms",
    "p95_ms",
    "p99_ms",
)
_PARAMS: Final = frozenset({"window", "service", "route", "method", "minutes", "limit"})


def _point(stats: WindowStats) -> dict[str, Any]:
    return {name: getattr(stats, name) for name in POINT_FIELDS}


def routes(backend: Backend) -> list[BaseRoute]:
    async def history(request: Request) -> Response:
        params = check_params(request.query_params, _PARAMS)
        window = window_param(params, default="1m")
        method = method_param(params)
        service = text_param(params, "service", max_length=64)
        route = text_param(params, "route", max_length=256)
        minutes = int_param(params, "minutes", default=DEFAULT_MINUTES, low=1, high=MAX_MINUTES)
        limit = int_param(params, "limit", default=DEFAULT_KEYS, low=1, high=MAX_KEYS)
        view = backend.view
        keys = view.keys(service, route, method)
        last = view.stream_time
        series = []
        for key in keys[:limit]:
            points = []
            if last is not None:
                for end in range(last - minutes * 60 + BUCKET_S, last + BUCKET_S, BUCKET_S):
                    stats = view.stats(key, window, end=end)
                    if stats is not None and stats.requests:
                        points.append(_point(stats))
            svc, meth, rte = key.split("|", 2)
            series.append({"service": svc, "method": meth, "route": rte, "points": points})
        return json_response(
            {
                "window": window,
                "minutes": minutes,
                "step_s": BUCKET_S,
                "stream_time": last,
                "total": len(keys),
                "limit": limit,
                "series": series,
            }
        )

    return versioned("/metrics/network/history", history, name="metrics_network_history")
