"""One attempt of one request: the bookkeeping that ends in exactly one probe event.

An :class:`_Attempt` is one try of a request the caller sent. The first one also carries
what is the same for every try of that request (trace, route, upstream, retry eligibility:
"the logical request"); a retry starts from a copy of those (:meth:`_Attempt.successor`).
Once its response headers are in, the attempt also wraps the response body (the subclasses
in :mod:`pipeline.probe._streams`), so a request costs one object, not three.

An attempt ends exactly once, in :meth:`_Attempt.finish`: that hands the sink a compact
record (:mod:`pipeline.probe._record`; the event is built from it off the caller's path
when the sink allows), reports the outcome to the breaker and lowers the in-flight gauge.
Every step there is guarded: a failure of the probe is counted (``_Core.internal_error``)
and never reaches the caller.

The hot path reaches into two httpx internals, pinned with httpx (``>=0.28,<0.29``) and
checked once at import: ``Headers._list`` (to find and add ``traceparent`` without
re-encoding every header) and ``URL._uri_reference`` (host, port and path without
re-encoding the URL). If either check fails, the public API is used instead.
"""

from __future__ import annotations

import contextlib
import operator
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self

import httpx

from pipeline.probe._errors import classify_exception
from pipeline.probe._record import Record
from pipeline.probe.breaker import BreakerStateName, CircuitBreaker
from pipeline.probe.tracecontext import SAMPLED, parse_traceparent, take_span_id
from pipeline.probe.tracecontext import ambient_trace as current_trace
from pipeline.probe.tracecontext import span_id_pool as _span_ids
from pipeline.schema import ErrorClass, Outcome

if TYPE_CHECKING:
    from pipeline.probe._core import _Core

_perf = time.perf_counter
_wall = time.time

_FAILURE_OUTCOMES: Final = frozenset(
    {"timeout", "connect_error", "transport_error", "protocol_error"}
)
_TRACEPARENT: Final = b"traceparent"
_lowercase_key = operator.itemgetter(1)
_FLAGS: Final = ("00", "01")  # trace-flags as sent, by our flags (SAMPLED or not)


def _headers_list_works() -> bool:
    """Whether ``Headers._list`` is the ``(raw key, lowercase key, value)`` list we expect."""
    try:
        headers = httpx.Headers({"Accept": "x"})
        entries = headers._list
        if entries != [(b"Accept", b"accept", b"x")]:
            return False
        entries.append((_TRACEPARENT, _TRACEPARENT, b"00-a"))
        return headers.get("traceparent") == "00-a" and headers.raw[-1] == (_TRACEPARENT, b"00-a")
    except Exception:  # noqa: BLE001 - any surprise: use the public API
        return False


_FAST_HEADERS: Final = _headers_list_works()


def _httpx_wrappers() -> frozenset[type]:
    """httpx's own response-body classes that only wrap httpcore's stream (its transports'
    ``ResponseStream``/``AsyncResponseStream``), if they keep it in ``_httpcore_stream``."""
    try:
        from httpx._transports.default import (
            AsyncResponseStream,
            ResponseStream,
            map_httpcore_exceptions,  # noqa: F401 - _streams raises through it
        )

        kinds: frozenset[type] = frozenset({AsyncResponseStream, ResponseStream})
        marker = object()
        if all(kind(marker)._httpcore_stream is marker for kind in kinds):
            return kinds
    except Exception:  # noqa: BLE001, S110 - a changed httpx: wrap its streams as they are
        pass
    return frozenset()


_HTTPX_WRAPPERS: Final = _httpx_wrappers()


class _Attempt:
    """One try of a logical request, from send to the end of its body."""

    __slots__ = (
        # The logical request: the same for all its attempts (copied by successor()).
        "breaker",
        "core",
        "declared_bytes",
        "flags",
        "logical_id",
        "method",
        "request",
        "route",
        "trace_id",
        "upstream",
        "user_trace",
        # This attempt.
        "attempt",
        "breaker_state",
        "connect",
        "done",
        "internal_ip",
        "ours_on_request",
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
        # The response body it wraps (set by got_response; see _streams).
        "_deadline",
        "_inner",
        "_iter",
        "_raw",
    )
    breaker: CircuitBreaker | None
    core: _Core
    declared_bytes: int
    flags: int
    logical_id: str
    method: str
    request: httpx.Request
    route: str
    trace_id: str
    upstream: str
    user_trace: Any
    attempt: int
    breaker_state: BreakerStateName | None
    connect: float | None
    done: bool
    internal_ip: str | None
    ours_on_request: bool
    pool_wait_ms: float | None
    received: int
    request_id: str
    started_at: float
    status_code: int | None
    t0: float
    t_headers: float
    t_last: float
    tls: float | None
    trace_t: dict[str, float] | None
    _deadline: float | None  # loop.time() (async) or perf_counter() (sync) value
    _inner: Any  # the response's own byte stream
    _iter: Any
    _raw: bool  # _inner is httpcore's stream, in place of httpx's wrapper of it
    asynchronous: ClassVar[bool] = False  # the async subclass's attempts run on an event loop

    def __init__(self, core: _Core, request: httpx.Request) -> None:
        """The first attempt of a new logical request (not started: see :meth:`start`)."""
        self.done = False
        self.core = core
        self.request = request
        self.attempt = 1
        self.upstream, self.route, self.breaker = core.resolve(request.url)
        if _FAST_HEADERS and _TRACEPARENT not in map(_lowercase_key, request.headers._list):
            self.ours_on_request = False  # one C-level scan: the common case, nothing to parse
            parent = current_trace.get()
        else:
            # A traceparent to replace, not to add (or no fast way to add one). Several are
            # joined, as ``Headers.get`` does.
            self.ours_on_request = True
            header: bytes | str | None = (
                b", ".join([e[2] for e in request.headers._list if e[1] == _TRACEPARENT])
                if _FAST_HEADERS
                else request.headers.get("traceparent")
            )
            parent = parse_traceparent(header) or current_trace.get()
        # Ids from the pool (pop is atomic; another thread may empty it between two pops).
        ids = _span_ids
        try:
            logical = ids.pop()
            # A new trace's id is two span ids: each is never zero, so neither is it.
            trace = ids.pop() + ids.pop() if parent is None else ""
        except IndexError:
            logical = take_span_id()
            trace = take_span_id() + take_span_id() if parent is None else ""
        self.logical_id = logical
        if parent is None:
            self.trace_id = trace
            self.flags = SAMPLED
        else:
            self.trace_id = parent.trace_id
            self.flags = parent.flags & SAMPLED
        self.method = request.method  # labelled (OTHER for extension methods) in the event
        # httpx has read byte bodies already (Request.content, without its property call):
        # no header lookup needed. A stream (or a redirect's copy of a body) has none.
        content = getattr(request, "_content", None)
        if content is not None:
            self.declared_bytes = len(content)
        else:
            length = request.headers.get("content-length")
            self.declared_bytes = int(length) if length and length.isdigit() else 0
        if core.phase_timings:
            user_trace = request.extensions.get("trace")
            owner = getattr(user_trace, "__self__", None)
            if isinstance(owner, _Attempt):  # ours, from the hop before a redirect: unwrap
                user_trace = owner.user_trace
            self.user_trace = user_trace
        else:
            self.user_trace = None
        budget = core.budget
        if budget is not None:
            budget.record_request()

    @property
    def replayable(self) -> bool:
        """Whether the body can be sent again (httpx holds it as bytes)."""
        return isinstance(self.request.stream, httpx.ByteStream)

    def successor(self) -> Self:
        """The next attempt of the same logical request (not started)."""
        nxt = type(self).__new__(type(self))
        nxt.done = False
        nxt.core = self.core
        nxt.request = self.request
        nxt.attempt = self.attempt + 1
        nxt.upstream = self.upstream
        nxt.route = self.route
        nxt.ours_on_request = True  # our traceparent from this attempt: replace it
        nxt.trace_id = self.trace_id
        nxt.flags = self.flags
        nxt.logical_id = self.logical_id
        nxt.method = self.method
        nxt.declared_bytes = self.declared_bytes
        nxt.user_trace = self.user_trace
        nxt.breaker = self.breaker
        return nxt

    def start(self) -> bool | None:
        """Ask the breaker, then stamp the request and start the clock.

        True: send. False: the breaker refused the attempt (its event is out). None: the
        probe itself failed here; the caller's request is then sent unobserved.
        """
        core = self.core
        breaker = self.breaker
        state: BreakerStateName | None = None
        try:
            if breaker is not None:
                state = breaker._state  # CLOSED admits without a call (breaker.acquire's path)
                if state != "closed":
                    state = breaker.acquire()
                    if state is None:
                        self.done = True
                        core.emit_breaker_open(self, breaker)
                        return False
            self.breaker_state = state
            try:
                span = _span_ids.pop()
            except IndexError:
                span = take_span_id()
            self.request_id = span
            header = f"00-{self.trace_id}-{span}-{_FLAGS[self.flags]}"
            request = self.request
            if self.ours_on_request:
                request.headers["traceparent"] = header
            else:  # nothing to replace: add it without re-encoding the other headers
                request.headers._list.append((_TRACEPARENT, _TRACEPARENT, header.encode()))
            self.received = 0
            self.status_code = None
            self.internal_ip = None
            self.connect = None
            self.tls = None
            self.t_headers = 0.0
            live = core.live
            live[span] = self.upstream  # keyed by the attempt's own new span id
            if core.options:
                self._start_options(request, len(live))
            else:
                self.trace_t = None
                # The pool had a free slot if this transport's in-flight count was within it
                # (pool_slots is -1 when the pool's size is unknown).
                self.pool_wait_ms = 0.0 if len(live) <= core.pool_slots else None
            self.started_at = _wall()
            self.t0 = _perf()
            return True
        except Exception as exc:  # noqa: BLE001 - I5: send unobserved rather than fail
            self.done = True
            core.live.pop(getattr(self, "request_id", ""), None)
            core.internal_error(exc, self.request)
            if state is not None and breaker is not None:
                with contextlib.suppress(Exception):
                    breaker.release()
            return None

    def _start_options(self, request: httpx.Request, in_flight: int) -> None:
        """The rest of start() when the config asks for more: timeouts, phase timings."""
        core = self.core
        if core.timeout_ext is not None:
            request.extensions["timeout"] = core.timeout_ext
        if core.phase_timings:
            self.trace_t = {}
            request.extensions["trace"] = self.atrace if self.asynchronous else self.trace
            self.pool_wait_ms = None  # measured by the trace callbacks
        else:
            self.trace_t = None
            self.pool_wait_ms = 0.0 if in_flight <= core.pool_slots else None

    # -- httpcore trace extension (phase timings) ----------------------------------------

    def trace(self, name: str, info: dict[str, Any]) -> None:
        self._on_trace(name, info)
        user = self.user_trace
        if user is not None:
            user(name, info)

    async def atrace(self, name: str, info: dict[str, Any]) -> None:
        self._on_trace(name, info)
        user: Callable[[str, dict[str, Any]], Awaitable[None]] | None = self.user_trace
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

    def got_response(self, response: httpx.Response, deadline: float | None) -> bool:
        """Headers are in: wrap the body. True if it was already read (the attempt is over)."""
        self.t_headers = self.t_last = _perf()
        status = self.status_code = response.status_code
        if not self.ours_on_request and not 300 <= status < 400:
            # The traceparent start() appended has been sent: take it off again. httpx's
            # cookie code copies the request's headers once the response is in, with one
            # scan of all headers per header (~2 us more for ours). A redirect keeps it:
            # httpx copies it to the next hop, whose attempt continues this trace.
            headers = self.request.headers._list
            if headers and headers[-1][0] is _TRACEPARENT:  # still last: ours
                headers.pop()
        if self.internal_ip is None:
            stream = response.extensions.get("network_stream")
            if stream is not None:
                last = self.core.last_client_ip  # a keep-alive connection: the same stream
                self.internal_ip = last[1] if last[0] is stream else self.core.client_ip(stream)
        if response.is_closed:  # an inner transport that returns read responses (mocks)
            self.received = len(response.content)
            self.finish(None, None)
            return True
        body: Any = response.stream
        if type(body) in _HTTPX_WRAPPERS:  # read httpcore's stream in its place (_streams)
            self._inner = body._httpcore_stream
            self._raw = True
        else:
            self._inner = body
            self._raw = False
        self._iter = None
        self._deadline = deadline
        response.stream = self  # type: ignore[assignment]  # the subclass is a byte stream
        return False

    def finish_exc(self, exc: BaseException, *, body_complete: bool = True) -> Outcome:
        outcome, error_class = classify_exception(exc)
        self.finish(outcome, error_class, body_complete=body_complete)
        return outcome

    def finish(
        self,
        outcome: Outcome | None,
        error_class: ErrorClass | None,
        *,
        body_complete: bool = True,
        end: float | None = None,
    ) -> None:
        """End the attempt: event, breaker, gauge. Idempotent; never raises.

        ``outcome`` None: the outcome of the response's status (``classify_status``; a
        status outside 100..599 is a ``protocol_error``).
        """
        if self.done:
            return
        self.done = True
        if end is None:
            end = _perf()
        core = self.core
        try:
            core.put(
                Record(
                    core.ctx,
                    self.started_at,
                    self.t0,
                    self.t_headers,
                    end,
                    self.method,
                    self.route,
                    self.upstream,
                    outcome,
                    error_class,
                    self.trace_id,
                    self.request_id,
                    self.logical_id,
                    self.attempt,
                    self.status_code,
                    self.declared_bytes,
                    self.received,
                    body_complete,
                    self.internal_ip,
                    self.breaker_state,
                    self.pool_wait_ms,
                    self.connect,
                    self.tls,
                )
            )
            next(core.emitted)
        except Exception as exc:  # noqa: BLE001 - I5
            core.internal_error(exc, self.request)
        breaker = self.breaker
        if breaker is not None:
            try:
                elapsed_s = end - self.t0
                if outcome is None:
                    status = self.status_code
                    if status is None or not 100 <= status < 500:  # 5xx, or no valid status
                        breaker.on_failure(elapsed_s)
                    elif not (breaker._clean and elapsed_s < breaker._slow_s):
                        breaker.on_success(elapsed_s)  # (the test above is its fast path)
                elif outcome == "cancelled":
                    breaker.release()
                elif outcome in _FAILURE_OUTCOMES or (self.status_code or 0) >= 500:
                    breaker.on_failure(elapsed_s)
                else:
                    breaker.on_success(elapsed_s)
            except Exception as exc:  # noqa: BLE001 - I5
                core.internal_error(exc, self.request)
        core.live.pop(self.request_id, None)
