"""Request tracing: a trace id on every response and every request's log line.

Pure ASGI, outermost of the API's middleware, so everything inside it (rate limit, auth,
timeout, handlers, the router's 404/405) answers with the trace:

- A valid incoming ``traceparent`` (W3C, parsed strictly by the probe's parser) is
  continued: same trace id and flags, a new span id for this server span. Otherwise a new
  trace starts. An invalid header is not an error.
- Every response gets ``traceparent`` (``00-<trace>-<span>-<flags>``) and ``x-trace-id``;
  so does a WebSocket handshake's accept (or denial).
- ``scope["state"]["trace_id"]`` / ``["span_id"]`` carry the ids to handlers and to the
  error body (``api.errors``).
- One JSON log line per request (logger ``egresswatch.api``, message ``request``):
  ``trace_id``, ``span_id``, ``method``, ``path`` (never the query string, which may hold a
  token), ``status``, ``duration_ms``, ``client``.
- An exception that escapes the app before the response started becomes the uniform 500
  body (the traceback goes to the log, never to the client).

Counts per status code are kept in :class:`RequestCounts` for ``/metrics``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from pipeline.logs import log_fields
from pipeline.probe.tracecontext import (
    SAMPLED,
    format_traceparent,
    new_span_id,
    new_trace_id,
    parse_traceparent,
)

__all__ = ["RequestCounts", "TracingMiddleware"]

_log: Final = logging.getLogger("egresswatch.api")


class RequestCounts:
    """Finished requests per status code (a WebSocket handshake counts as 101 or its
    refusal); the codes are the app's own, a small set."""

    __slots__ = ("by_code",)

    def __init__(self) -> None:
        self.by_code: dict[int, int] = {}

    def count(self, status: int) -> None:
        self.by_code[status] = self.by_code.get(status, 0) + 1


class TracingMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        counts: RequestCounts | None = None,
        clock: Callable[[], float] = time.perf_counter,
        logger: logging.Logger = _log,
    ) -> None:
        self.app = app
        self.counts = counts if counts is not None else RequestCounts()
        self._clock = clock
        self._log = logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started_at = self._clock()
        parent = parse_traceparent(Headers(scope=scope).get("traceparent"))
        trace_id = parent.trace_id if parent is not None else new_trace_id()
        flags = parent.flags if parent is not None else SAMPLED
        span_id = new_span_id()
        state = scope.setdefault("state", {})
        state["trace_id"] = trace_id
        state["span_id"] = span_id
        trace_headers = [
            (b"traceparent", format_traceparent(trace_id, span_id, flags).encode()),
            (b"x-trace-id", trace_id.encode()),
        ]
        status = 0
        response_started = False

        async def send_traced(message: Message) -> None:
            nonlocal status, response_started
            kind = message["type"]
            if kind in ("http.response.start", "websocket.http.response.start"):
                status = message["status"]
                response_started = True
                message = {**message, "headers": [*message.get("headers", ()), *trace_headers]}
            elif kind == "websocket.accept":
                status = 101
                response_started = True
                message = {**message, "headers": [*message.get("headers", ()), *trace_headers]}
            elif kind == "websocket.close" and not response_started:
                status = 403  # a handshake closed before accept is refused with 403
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, send_traced)
        except Exception:
            if response_started or scope["type"] != "http":
                status = status or 500
                raise
            self._log.exception(
                "unhandled error", extra=log_fields(trace_id=trace_id, path=scope["path"])
            )
            response = error_response(scope, 500, "internal_error", "internal error")
            await response(scope, receive, send_traced)
        finally:
            duration_ms = (self._clock() - started_at) * 1000.0
            final = status or 500  # cancelled (client gone, server stopping) before answering
            self.counts.count(final)
            client = scope.get("client")
            self._log.info(
                "request",
                extra=log_fields(
                    trace_id=trace_id,
                    span_id=span_id,
                    method=scope.get("method", "WEBSOCKET"),
                    path=scope["path"],
                    status=final,
                    duration_ms=round(duration_ms, 3),
                    client=client[0] if client else None,
                ),
            )
