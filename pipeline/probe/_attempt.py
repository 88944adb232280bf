"""One attempt of one request: the bookkeeping that ends in exactly one probe event.

One :class:`_Logical` per request the caller sends (its trace, route, upstream, retry
eligibility), one :class:`_Attempt` per try. An attempt ends exactly once, in
:meth:`_Attempt.finish`: that builds the event, hands it to the sink, reports the outcome
to the breaker and lowers the in-flight gauge. Every step there is guarded: a failure of
the probe is counted (``_Core.internal_error``) and never reaches the caller.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import httpx

from pipeline.probe._errors import classify_exception, classify_status
from pipeline.probe.breaker import CircuitBreaker
from pipeline.probe.retry import NOTHING_SENT_ERROR_CLASSES
from pipeline.probe.tracecontext import format_traceparent, new_span_id
from pipeline.schema import ErrorClass, Outcome, ProbeEvent, derive_severity

if TYPE_CHECKING:
    from pipeline.probe._core import _Core

_perf = time.perf_counter
_wall = time.time

_FAILURE_OUTCOMES: Final = frozenset(
    {"timeout", "connect_error", "transport_error", "protocol_error"}
)
# Nothing left the process for these: bytes_sent is 0 whatever the declared length.
_NOTHING_SENT: Final = NOTHING_SENT_ERROR_CLASSES | {"pool_timeout", "tls_error", "breaker_open"}
_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)


class _Logical:
    """One request as the caller sent it: the same for all its attempts."""

    __slots__ = (
        "breaker",
        "declared_bytes",
        "flags",
        "logical_id",
        "method",
        "replayable",
        "request",
        "route",
        "trace_id",
        "upstream",
        "user_trace",
    )

    def __init__(
        self, request: httpx.Request, upstream: str, route: str, trace_id: str, flags: int
    ) -> None:
        self.request = request
        method = request.method.upper()
        # Extension methods (PROPFIND, ...) are an open set: one bounded label for them all.
        self.method = method if method in _METHODS else "OTHER"
        self.upstream = upstream
        self.route = route
        self.trace_id = trace_id
        self.flags = flags
        self.logical_id = new_span_id()
        self.breaker: CircuitBreaker | None = None
        self.replayable = isinstance(request.stream, httpx.ByteStream)
        try:  # httpx has read byte bodies already: no header lookup needed
            self.declared_bytes = len(request.content)
        except httpx.RequestNotRead:  # a stream (or a redirect's copy of a body)
            length = request.headers.get("content-length")
            self.declared_bytes = int(length) if length and length.isdigit() else 0
        user_trace: Any = request.extensions.get("trace")
        owner = getattr(user_trace, "__self__", None)
        if isinstance(owner, _Attempt):  # ours, from the hop before a redirect: unwrap
            previous: _Logical = owner.logical
            user_trace = previous.user_trace
        self.user_trace: Any = user_trace


class _Attempt:
    """One try of a logical request, from send to the end of its body."""

    __slots__ = (
        "attempt",
        "breaker",
        "breaker_state",
        "connect",
        "core",
        "done",
        "internal_ip",
        "logical",
        "loop",
        "pool_wait_ms",
        "received",
        "request_id",
        "started_at",
        "status_code",
        "t0",
        "t_headers",
        "t_last",
        "tls",
        "trace_t",
    )

    def __init__(
        self,
        core: _Core,
        logical: _Logical,
        attempt: int,
        breaker: CircuitBreaker | None,
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        self.core = core
        self.logical = logical
        self.attempt = attempt
        self.breaker = breaker
        self.breaker_state = breaker.state if breaker is not None else None
        self.loop = loop
        self.done = False
        self.received = 0
        self.status_code: int | None = None
        self.internal_ip: str | None = None
        self.t_headers = 0.0
        self.connect: float | None = None
        self.tls: float | None = None
        self.trace_t: dict[str, float] | None = None
        self.request_id = span = new_span_id()
        request = logical.request
        request.headers["traceparent"] = format_traceparent(logical.trace_id, span, logical.flags)
        if core.timeout_ext is not None:
            request.extensions["timeout"] = core.timeout_ext
        if core.phase_timings:
            self.trace_t = {}
            request.extensions["trace"] = self.atrace if loop is not None else self.trace
        total = core.attempt_started(logical.upstream)
        limit = core.pool_limit
        self.pool_wait_ms: float | None = (
            0.0 if limit is not None and total <= limit and not core.phase_timings else None
        )
        self.started_at = _wall()
        self.t0 = self.t_last = _perf()

    # -- httpcore trace extension (phase timings) ----------------------------------------

    def trace(self, name: str, info: dict[str, Any]) -> None:
        self._on_trace(name, info)
        user = self.logical.user_trace
        if user is not None:
            user(name, info)

    async def atrace(self, name: str, info: dict[str, Any]) -> None:
        self._on_trace(name, info)
        user: Callable[[str, dict[str, Any]], Awaitable[None]] | None = self.logical.user_trace
        if user is not None:
            await user(name, info)

    def _on_trace(self, name: str, info: dict[str, Any]) -> None:
        times = self.trace_t
        if times is None:
            return
        try:
            now = _perf()
            if not times:
                self.pool_wait_ms = (now - self.t0) * 1000.0
            times[name] = now
            if name == "connection.connect_tcp.complete":
                self.connect = now - times.get("connection.connect_tcp.started", now)
                stream = info.get("return_value")
                if stream is not None:
                    self.internal_ip = self.core.client_ip(stream)
            elif name == "connection.start_tls.complete":
                self.tls = now - times.get("connection.start_tls.started", now)
        except Exception as exc:  # noqa: BLE001 - I5
            self.core.internal_error(exc)

    # -- milestones ----------------------------------------------------------------------

    def got_response(self, response: httpx.Response) -> bool:
        """Headers are in. True if the body was already read (the attempt is then over)."""
        self.t_headers = self.t_last = _perf()
        self.status_code = response.status_code
        if self.internal_ip is None:
            stream = response.extensions.get("network_stream")
            if stream is not None:
                self.internal_ip = self.core.client_ip(stream)
        if response.is_closed:  # an inner transport that returns read responses (mocks)
            self.received = len(response.content)
            self.finish_status(body_complete=True)
            return True
        return False

    def finish_status(self, *, body_complete: bool, end: float | None = None) -> None:
        status = self.status_code or 0
        if 100 <= status <= 599:
            outcome, error_class = classify_status(status)
        else:
            outcome, error_class = "protocol_error", "remote_protocol_error"
        self.finish(outcome, error_class, body_complete=body_complete, end=end)

    def finish_exc(self, exc: BaseException, *, body_complete: bool = True) -> Outcome:
        outcome, error_class = classify_exception(exc)
        self.finish(outcome, error_class, body_complete=body_complete)
        return outcome

    def finish(
        self,
        outcome: Outcome,
        error_class: ErrorClass | None,
        *,
        body_complete: bool = True,
        end: float | None = None,
    ) -> None:
        """End the attempt: event, breaker, gauge. Idempotent; never raises."""
        if self.done:
            return
        self.done = True
        core = self.core
        logical = self.logical
        elapsed_s = (_perf() if end is None else end) - self.t0
        emitted = False
        try:
            elapsed_ms = elapsed_s * 1000.0
            status = self.status_code
            if status is not None and not 100 <= status <= 599:
                status = None
            t_headers = self.t_headers
            sent = 0 if error_class in _NOTHING_SENT else logical.declared_bytes
            core.sink.submit(
                ProbeEvent(
                    service=core.service,
                    started_at=self.started_at,
                    elapsed_ms=elapsed_ms,
                    method=logical.method,  # type: ignore[arg-type]
                    route=logical.route,
                    upstream=logical.upstream,
                    outcome=outcome,
                    severity=derive_severity(
                        outcome=outcome,
                        status_code=status,
                        elapsed_ms=elapsed_ms,
                        attempt=self.attempt,
                        body_complete=body_complete,
                    ),
                    trace_id=logical.trace_id,
                    request_id=self.request_id,
                    logical_request_id=logical.logical_id,
                    attempt=self.attempt,
                    status_code=status,
                    bytes_sent=sent,
                    bytes_received=self.received,
                    body_complete=body_complete,
                    error_class=error_class,
                    internal_ip=self.internal_ip,
                    external_ip=core.nat.external_ip(self.internal_ip, logical.upstream),
                    breaker_state=self.breaker_state,
                    pool_wait_ms=self.pool_wait_ms,
                    connect_ms=self.connect * 1000.0 if self.connect is not None else None,
                    tls_ms=self.tls * 1000.0 if self.tls is not None else None,
                    ttfb_ms=(t_headers - self.t0) * 1000.0 if t_headers else None,
                    transfer_ms=(
                        max(0.0, elapsed_s - (t_headers - self.t0)) * 1000.0 if t_headers else None
                    ),
                )
            )
            emitted = True
        except Exception as exc:  # noqa: BLE001 - I5
            core.internal_error(exc, logical.request)
        breaker = self.breaker
        if breaker is not None:
            try:
                if outcome == "cancelled":
                    breaker.release()
                elif outcome in _FAILURE_OUTCOMES or (self.status_code or 0) >= 500:
                    breaker.on_failure(elapsed_s)
                else:
                    breaker.on_success(elapsed_s)
            except Exception as exc:  # noqa: BLE001 - I5
                core.internal_error(exc, logical.request)
        core.attempt_ended(logical.upstream, emitted)
