"""Server-side timeout: a request that runs longer than ``timeout_s`` is cancelled, 504.

- HTTP only: WebSocket sessions are long-lived by design and pass through.
- The handler is cancelled (``asyncio.timeout``) at its next ``await``; if no response has
  started, the client gets the uniform 504 body. If the response had already started, it
  cannot change any more: the connection is cut (logged) and the client sees a truncated
  answer, never a wrong one.
- Handlers that compute without awaiting (the window queries) cannot be interrupted; they
  are bounded by the page size instead (at most 1,000 keys), and measured by
  ``bench/api_latency.py``.
- A ``TimeoutError`` raised by the handler itself is not ours and propagates (a 500).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response, trace_id_of
from pipeline.logs import log_fields

__all__ = ["TimeoutMiddleware"]

_log: Final = logging.getLogger("egresswatch.api")


class TimeoutMiddleware:
    def __init__(self, app: ASGIApp, *, timeout_s: float) -> None:
        if not timeout_s > 0 or not math.isfinite(timeout_s):
            raise ValueError(f"timeout_s must be > 0 and finite, got {timeout_s!r}")
        self.app = app
        self.timeout_s = timeout_s
        self.timeouts_total = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        deadline = asyncio.timeout(self.timeout_s)
        try:
            async with deadline:
                await self.app(scope, receive, send_watched)
        except TimeoutError:
            if not deadline.expired():
                raise
            self.timeouts_total += 1
            if started:
                _log.warning(
                    "request timed out after its response started; connection cut",
                    extra=log_fields(trace_id=trace_id_of(scope), path=scope["path"]),
                )
                raise
            response = error_response(
                scope,
                504,
                "timeout",
                f"the request did not complete within {self.timeout_s:g} s",
            )
            await response(scope, receive, send)
