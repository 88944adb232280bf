"""``GET /v1/resilience/state``: breakers and retry budgets per (service, upstream), plus
the pipeline's own protections; the backend's ``resilience_state()``.

Shape (docs/api.md and the OpenAPI document are the contract)::

    {"upstreams": [{"service", "upstream", "breaker_state", "failure_rate",
                    "slow_call_rate", "calls", "last_transitions": [{"from", "to", "at"}],
                    "stuck_half_open", "retries", "retry_rate", "timeouts",
                    "timeout_rate", "breaker_open_rejections"}, ...],
     "pipeline": {"sink": {...} | null, "emitter": ..., ...}}

Upstreams are sorted by (service, upstream). ``service`` (optional, exact) keeps one
service's upstreams; anything else in the query is 422.
"""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from api.backend import Backend
from api.errors import json_response
from api.routes import check_params, text_param, versioned

__all__ = ["routes"]

_PARAMS: Final = frozenset({"service"})


def routes(backend: Backend) -> list[BaseRoute]:
    async def state(request: Request) -> Response:
        params = check_params(request.query_params, _PARAMS)
        service = text_param(params, "service", max_length=64)
        current = backend.resilience_state(service=service)
        return json_response({"upstreams": [], "pipeline": {}, **current})

    return versioned("/resilience/state", state, name="resilience_state")
