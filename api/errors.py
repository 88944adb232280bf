"""JSON bodies of the API, and the one error body every 4xx/5xx carries.

Every error, from a handler, a middleware or the router (404, 405), is::

    {"error": {"code": "rate_limited", "message": "...", "trace_id": "<32 hex>"}}

``code`` is a stable, machine-readable word (the table in docs/api.md); ``message`` is for
people and may change; ``trace_id`` is the request's trace (also in the ``x-trace-id``
header and the request's log line). A body may carry more top-level fields next to
``error`` (``/health/ready``'s 503 keeps its ``reasons`` and ``pipeline``).

Errors raised in handlers are :class:`ApiError`; Starlette's ``HTTPException`` (404, 405)
is mapped once, here. Middleware answer with :func:`reject`, which also speaks to a
WebSocket handshake (a denial response where the server supports it, else a close).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from pipeline.probe.tracecontext import new_trace_id

__all__ = [
    "ApiError",
    "error_body",
    "error_response",
    "exception_handlers",
    "json_response",
    "reject",
    "trace_id_of",
]

_encoder: Final = msgspec.json.Encoder()
_CODES: Final[Mapping[int, str]] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    422: "invalid_parameter",
    429: "rate_limited",
    500: "internal_error",
    503: "not_ready",
    504: "timeout",
}
WS_POLICY_VIOLATION: Final = 1008
WS_TRY_AGAIN_LATER: Final = 1013


class ApiError(Exception):
    """An error answer: ``raise ApiError(422, "invalid_limit", "limit must be ...")``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def json_response(
    content: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON response encoded with msgspec (dataclasses, tuples and ``None`` included)."""
    return Response(
        _encoder.encode(content),
        status_code=status,
        headers=dict(headers or {}),
        media_type="application/json",
    )


def trace_id_of(scope: Scope) -> str:
    """The request's trace id, set by the tracing middleware (a fresh one without it)."""
    state = scope.get("state")
    trace_id = state.get("trace_id") if isinstance(state, dict) else None
    return trace_id if isinstance(trace_id, str) else new_trace_id()


def error_body(code: str, message: str, trace_id: str, **extra: Any) -> dict[str, Any]:
    return {**extra, "error": {"code": code, "message": message, "trace_id": trace_id}}


def error_response(
    scope: Scope,
    status: int,
    code: str | None,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    body = error_body(code or _CODES.get(status, f"http_{status}"), message, trace_id_of(scope))
    body.update(extra)
    return json_response(body, status, headers)


async def reject(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Answer a request (or refuse a WebSocket handshake) from a middleware."""
    if scope["type"] == "websocket" and "websocket.http.response" not in scope.get(
        "extensions", {}
    ):
        close_code = WS_TRY_AGAIN_LATER if status == 429 else WS_POLICY_VIOLATION
        await send({"type": "websocket.close", "code": close_code, "reason": code})
        return
    response = error_response(scope, status, code, message, headers=headers)
    await response(scope, receive, send)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no resource at {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} not allowed on {request.url.path}"
    else:
        message = exc.detail
    return error_response(request.scope, exc.status_code, None, message, headers=exc.headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(request.scope, exc.status, exc.code, exc.message, headers=exc.headers)


def exception_handlers() -> dict[Any, Any]:
    """For ``Starlette(exception_handlers=...)``. Unhandled errors (500) are answered by the
    tracing middleware, which sits outside these handlers and logs the traceback."""
    return {HTTPException: _http_exception, ApiError: _api_error}
