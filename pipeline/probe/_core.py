"""Per-transport state of the probe, shared by the async and the sync transport.

:class:`_Core` holds what outlives one request: the route table, NAT mapping, breakers and
retry budget, the in-flight gauges and counters, and the queue of attempts whose response
was dropped unclosed. It starts logical requests (:meth:`_Core.begin`) and decides retries
(:meth:`_Core.retry_delay`). Thread-safe: counters and gauges change under one lock.

Internal failures are counted and logged at most once a minute, with the request's URL
redacted (:func:`~pipeline.probe.redaction.redact_url`); they never reach the caller.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections import deque
from typing import Any, Final

import httpx

from pipeline.probe._attempt import _Attempt, _Logical
from pipeline.probe.breaker import BreakerRegistry, CircuitBreaker
from pipeline.probe.config import ProbeConfig
from pipeline.probe.nat import NatMapping
from pipeline.probe.redaction import redact_url
from pipeline.probe.retry import (
    NOTHING_SENT_ERROR_CLASSES,
    RetryBudget,
    backoff_delay,
    is_retryable,
    parse_retry_after,
    retry_after_delay,
)
from pipeline.probe.routes import RouteTable
from pipeline.probe.sink import EventSink
from pipeline.probe.tracecontext import (
    SAMPLED,
    current_trace,
    new_span_id,
    new_trace_id,
    parse_traceparent,
)
from pipeline.schema import ProbeEvent

_log = logging.getLogger("egresswatch.probe")
_wall = time.time

_DEFAULT_PORTS: Final = {b"http": 80, b"https": 443, b"ws": 80, b"wss": 443}
_MAX_ORPHANS: Final = 10_000
_LOG_EVERY_S: Final = 60.0


class _Core:
    """Everything one transport shares across requests. Thread-safe."""

    def __init__(self, config: ProbeConfig, sink: EventSink, *, pool_limit: int | None) -> None:
        self.config = config
        self.sink = sink
        self.service = config.service
        self.routes = RouteTable(
            config.route_templates,
            max_routes_per_upstream=config.max_routes_per_upstream,
            max_upstreams=config.max_upstreams,
        )
        self.nat = NatMapping(config.nat_rules)
        self.breakers = (
            BreakerRegistry(config.breaker, max_breakers=config.max_upstreams)
            if config.breaker is not None
            else None
        )
        retry = config.retry
        self.retry = retry if retry is not None and retry.max_attempts > 1 else None
        self.budget = RetryBudget(self.retry) if self.retry is not None else None
        self.timeout_ext = config.timeouts.as_extension() if config.timeouts else None
        self.total_s = config.timeouts.total if config.timeouts else None
        self.phase_timings = config.phase_timings
        self.pool_limit = pool_limit
        self.lock = threading.Lock()
        self.in_flight: dict[str, int] = {}
        self.in_flight_total = 0
        self.events_emitted = 0
        self.internal_errors = 0
        self.budget_refusals = 0
        self.retries = 0
        self.short_circuits = 0
        self.orphaned = 0
        self.orphans_dropped = 0
        self.orphans: deque[_Attempt] = deque()
        self._upstreams: dict[tuple[bytes, bytes, int | None], str] = {}
        # Local address per live connection: anyio's get_extra_info costs ~15 us a call.
        self._client_ips: weakref.WeakKeyDictionary[Any, str | None] = weakref.WeakKeyDictionary()
        self._last_log = -_LOG_EVERY_S

    # -- per logical request -----------------------------------------------------------

    def begin(self, request: httpx.Request) -> _Logical:
        url = request.url
        key = (url.raw_scheme, url.raw_host, url.port)
        upstream = self._upstreams.get(key)
        if upstream is None:
            upstream = self._upstream_of(key)
        path = url.raw_path.decode("ascii", "replace")
        route = self.routes.route(upstream, path)
        parent = parse_traceparent(request.headers.get("traceparent")) or current_trace()
        if parent is not None:
            trace_id, flags = parent.trace_id, parent.flags & SAMPLED
        else:
            trace_id, flags = new_trace_id(), SAMPLED
        logical = _Logical(request, upstream, route, trace_id, flags)
        if self.breakers is not None:
            logical.breaker = self.breakers.get(upstream)
        if self.budget is not None:
            self.budget.record_request()
        return logical

    def _upstream_of(self, key: tuple[bytes, bytes, int | None]) -> str:
        scheme, raw_host, port = key
        host = raw_host.decode("ascii", "replace") or "localhost"
        if ":" in host:
            host = f"[{host}]"
        upstream = f"{host}:{port if port is not None else _DEFAULT_PORTS.get(scheme, 0)}"
        if len(self._upstreams) < 4096:
            self._upstreams[key] = upstream
        return upstream

    def may_retry_status(self, logical: _Logical, attempt: int, status: int) -> bool:
        """Cheap pre-check: could a response with this status be retried at all?"""
        config = self.retry
        if (
            config is None
            or status not in config.retry_on_status
            or attempt >= config.max_attempts
            or not logical.replayable
        ):
            return False
        try:
            return is_retryable(
                method=logical.method,
                outcome="http_error",
                error_class=None,
                status_code=status,
                config=config,
            )
        except Exception as exc:  # noqa: BLE001 - I5
            self.internal_error(exc, logical.request)
            return False

    def retry_delay(
        self,
        logical: _Logical,
        attempt: int,
        outcome: str,
        error_class: str | None,
        status_code: int | None = None,
        headers: httpx.Headers | None = None,
    ) -> float | None:
        """Seconds to wait before the next attempt, or None: this attempt is the last."""
        config = self.retry
        if config is None or attempt >= config.max_attempts or self.budget is None:
            return None
        try:
            if not is_retryable(
                method=logical.method,
                outcome=outcome,
                error_class=error_class,
                status_code=status_code,
                config=config,
            ):
                return None
            if not logical.replayable and error_class not in NOTHING_SENT_ERROR_CLASSES:
                return None
            breaker = logical.breaker
            if breaker is not None and breaker.state == "open":
                return None  # this failure opened it: a retry would only be short-circuited
            delay: float | None = backoff_delay(attempt, config)
            retry_after = headers.get("retry-after") if headers is not None else None
            if retry_after and delay is not None:
                delay = retry_after_delay(
                    delay, parse_retry_after(retry_after, now=_wall()), config
                )
            if delay is None:
                return None
            if not self.budget.try_acquire_retry():
                with self.lock:
                    self.budget_refusals += 1
                return None
            with self.lock:
                self.retries += 1
            return delay
        except Exception as exc:  # noqa: BLE001 - I5: a probe bug must not fail the call
            self.internal_error(exc, logical.request)
            return None

    # -- events that need no attempt object --------------------------------------------

    def emit_breaker_open(self, logical: _Logical, attempt: int, breaker: CircuitBreaker) -> None:
        with self.lock:
            self.short_circuits += 1
        try:
            state = breaker.state
            self._submit(
                ProbeEvent(
                    service=self.service,
                    started_at=_wall(),
                    elapsed_ms=0.0,
                    method=logical.method,  # type: ignore[arg-type]
                    route=logical.route,
                    upstream=logical.upstream,
                    outcome="breaker_open",
                    severity="critical",
                    trace_id=logical.trace_id,
                    request_id=new_span_id(),
                    logical_request_id=logical.logical_id,
                    attempt=attempt,
                    error_class="breaker_open",
                    breaker_state=state,
                )
            )
        except Exception as exc:  # noqa: BLE001 - I5
            self.internal_error(exc, logical.request)

    def _submit(self, event: ProbeEvent) -> None:
        """For events outside an attempt (an attempt counts its own in ``attempt_ended``)."""
        self.sink.submit(event)
        with self.lock:
            self.events_emitted += 1

    def client_ip(self, stream: Any) -> str | None:
        """The local address of a connection (httpcore network stream), cached per stream."""
        try:
            return self._client_ips[stream]
        except KeyError:
            pass
        except TypeError:  # not weak-referenceable: no cache
            return _client_ip(stream)
        address = _client_ip(stream)
        with contextlib.suppress(TypeError):
            self._client_ips[stream] = address
        return address

    # -- gauges, orphans, internal errors ------------------------------------------------

    def attempt_started(self, upstream: str) -> int:
        with self.lock:
            self.in_flight[upstream] = self.in_flight.get(upstream, 0) + 1
            self.in_flight_total += 1
            return self.in_flight_total

    def attempt_ended(self, upstream: str, emitted: bool) -> None:
        with self.lock:
            self.events_emitted += emitted
            left = self.in_flight.get(upstream, 1) - 1
            if left > 0:
                self.in_flight[upstream] = left
            else:
                self.in_flight.pop(upstream, None)
            self.in_flight_total -= 1

    def orphan(self, attempt: _Attempt) -> None:
        """Called from ``__del__``: only queue (no lock, no I/O); drained later."""
        if len(self.orphans) < _MAX_ORPHANS:
            self.orphans.append(attempt)
        else:
            self.orphans_dropped += 1
        loop = attempt.loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self.drain_orphans)
            except Exception:  # noqa: BLE001, S110 - loop closed: the next request drains
                pass

    def drain_orphans(self) -> None:
        while True:
            try:
                attempt = self.orphans.popleft()
            except IndexError:
                return
            with self.lock:
                self.orphaned += 1
            attempt.finish_status(body_complete=False, end=attempt.t_last)

    def internal_error(self, exc: BaseException, request: httpx.Request | None = None) -> None:
        """Count a probe failure; log it at most once a minute, without secrets."""
        with self.lock:
            self.internal_errors += 1
            count = self.internal_errors
            now = time.monotonic()
            if now - self._last_log < _LOG_EVERY_S:
                return
            self._last_log = now
        where = redact_url(request.url) if request is not None else "-"
        _log.warning(
            "probe internal error %s on %s (%d so far); the call goes on unobserved in part",
            type(exc).__name__,
            where,
            count,
        )


def _client_ip(stream: Any) -> str | None:
    try:
        address = stream.get_extra_info("client_addr")
    except Exception:  # noqa: BLE001 - closed socket or an exotic stream: unknown
        return None
    if isinstance(address, tuple) and address and isinstance(address[0], str):
        return address[0].split("%", 1)[0]  # no IPv6 zone: the schema allows hex, '.' and ':'
    return None
