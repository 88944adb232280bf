"""The API's endpoints, one module per resource; each exposes ``routes(...)``.

Every endpoint answers at ``/v1/<path>`` (the contract) and at the seed's unversioned
``/<path>`` (same handler, same body).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Final, get_args

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api.errors import ApiError
from pipeline.schema import Method
from tables.windows import VIEWS

__all__ = [
    "METHODS",
    "VERSION_PREFIX",
    "Endpoint",
    "check_params",
    "int_param",
    "method_param",
    "text_param",
    "versioned",
    "window_param",
]

Endpoint = Callable[[Request], Awaitable[Response]]

VERSION_PREFIX: Final = "/v1"
METHODS: Final[tuple[str, ...]] = get_args(Method)
_DIGITS: Final = re.compile(r"[0-9]{1,10}")


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


def int_param(params: Mapping[str, str], name: str, *, default: int, low: int, high: int) -> int:
    """An optional integer in ``low..high``: absent is ``default``; anything else is 422."""
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


def window_param(params: Mapping[str, str], *, default: str) -> str:
    """The ``window`` view (``10s``, ``1m``, ``5m``); another value is 422."""
    window = params.get("window", default)
    if window not in VIEWS:
        raise ApiError(
            422,
            "invalid_window",
            f"window must be one of {', '.join(VIEWS)}, got {window[:20]!r}",
        )
    return window


def method_param(params: Mapping[str, str]) -> str | None:
    """An optional HTTP ``method`` filter from the schema's set; another value is 422."""
    method = params.get("method")
    if method is not None and method not in METHODS:
        raise ApiError(
            422,
            "invalid_method",
            f"method must be one of {', '.join(METHODS)}, got {method[:20]!r}",
        )
    return method
