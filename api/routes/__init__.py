"""The API's endpoints, one module per resource; each exposes ``routes(...)``.

Every endpoint answers at ``/v1/<path>`` (the contract) and at the seed's unversioned
``/<path>`` (same handler, same body).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Final

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api.errors import ApiError

__all__ = ["VERSION_PREFIX", "Endpoint", "check_params", "text_param", "versioned"]

Endpoint = Callable[[Request], Awaitable[Response]]

VERSION_PREFIX: Final = "/v1"


def versioned(path: str, endpoint: Endpoint, *, name: str) -> list[BaseRoute]:
    """The same GET endpoint at ``/v1<path>`` and ``<path>``."""
    return [
        Route(f"{VERSION_PREFIX}{path}", endpoint, methods=["GET"], name=name),
        Route(path, endpoint, methods=["GET"], name=f"{name}_unversioned"),
    ]


def check_params(params: QueryParams, allowed: Collection[str]) -> Mapping[str, str]:
    """Refuse unknown or repeated query parameters (422); return them as a plain dict."""
    seen: dict[str, str] = {}
    for name, value in params.multi_items():
        if name not in allowed:
            raise ApiError(
                422,
                "unknown_parameter",
                f"unknown query parameter {name[:64]!r}; expected one of "
                f"{', '.join(sorted(allowed))}",
            )
        if name in seen:
            raise ApiError(422, "repeated_parameter", f"query parameter {name!r} given twice")
        seen[name] = value
    return seen


def text_param(params: Mapping[str, str], name: str, *, max_length: int) -> str | None:
    """An optional exact-match filter: absent is ``None``; empty or too long is 422."""
    value = params.get(name)
    if value is None:
        return None
    if not 0 < len(value) <= max_length:
        raise ApiError(
            422,
            f"invalid_{name}",
            f"{name} must be 1 to {max_length} characters, got {len(value)}",
        )
    return value
