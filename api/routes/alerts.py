"""``GET /v1/alerts``: the firing and recently resolved SLO alerts, from the worker's AlertLog.

Every worker's live feed reads every partition of the alerts topic into its
:class:`api.alert_log.AlertLog`, so any worker answers for every alert, whichever worker
evaluated it. Items are the alerts' latest records (docs/alerts.md, schema v1) plus
``state``; firing first, then the most recently fired first.

Parameters (all optional; anything else, a repeated one or a bad value is 422 with a
specific ``code``):

| name | rule | error code |
|---|---|---|
| ``service`` | exact service, 1..256 chars | ``invalid_service`` |
| ``route`` | exact route template (``*`` for a service rollup), 1..256 chars | ``invalid_route`` |
| ``rule`` | exact rule name, 1..64 chars | ``invalid_rule`` |
| ``state`` | ``firing`` or ``resolved`` | ``invalid_state`` |
| ``since`` | epoch seconds or ISO 8601 (no offset: UTC) | ``invalid_since`` |
| ``until`` | the same | ``invalid_until`` |

``since``/``until`` keep the alerts active at some time of ``[since, until)``; an empty
interval (``since >= until``) holds none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final, get_args

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from api.alert_log import AlertLog, AlertState
from api.errors import ApiError, json_response
from api.routes import check_params, text_param, versioned

__all__ = ["MAX_EPOCH", "STATES", "parse_instant", "routes"]

STATES: Final[tuple[str, ...]] = get_args(AlertState)
MAX_EPOCH: Final = 253_402_300_800.0  # 10000-01-01T00:00:00Z
_PARAMS: Final = frozenset({"service", "route", "rule", "state", "since", "until"})
_STATE_OF: Final[dict[str, AlertState]] = {"firing": "firing", "resolved": "resolved"}


def parse_instant(text: str) -> float:
    """Epoch seconds, or ISO 8601 (``2026-12-08T03:00:00Z``; no offset means UTC).

    Raises ``ValueError`` with a message for people.
    """
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not (math.isfinite(seconds) and 0 <= seconds < MAX_EPOCH):
            raise ValueError(f"epoch seconds must be in 0..{MAX_EPOCH:.0f}")
        return seconds
    try:
        moment = datetime.fromisoformat(text.strip().upper())  # RFC 3339 allows "t" and "z"
    except ValueError:
        message = "not epoch seconds or an ISO 8601 time (e.g. 2026-12-08T03:00:00Z)"
        raise ValueError(message) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp())


def _instant_param(params: Mapping[str, str], name: str) -> float | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        return parse_instant(raw)
    except ValueError as exc:
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise ApiError(422, f"invalid_{name}", f"{name} {shown!r}: {exc}") from None


def routes(log: AlertLog) -> list[BaseRoute]:
    async def alerts(request: Request) -> Response:
        params = check_params(request.query_params, _PARAMS)
        state = params.get("state")
        if state is not None and state not in _STATE_OF:
            raise ApiError(
                422,
                "invalid_state",
                f"state must be one of {', '.join(STATES)}, got {state[:20]!r}",
            )
        service = text_param(params, "service", max_length=256)
        route = text_param(params, "route", max_length=256)
        rule = text_param(params, "rule", max_length=64)
        since = _instant_param(params, "since")
        until = _instant_param(params, "until")
        found = log.query(
            service=service,
            route=route,
            rule=rule,
            state=_STATE_OF.get(state or ""),
            since=since,
            until=until,
        )
        firing = sum(1 for entry in found if entry.state == "firing")
        return json_response(
            {
                "total": len(found),
                "firing": firing,
                "resolved": len(found) - firing,
                "items": [entry.as_dict() for entry in found],
                "log": log.stats(),
            }
        )

    return versioned("/alerts", alerts, name="alerts")
