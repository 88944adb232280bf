"""Per-transport state of the probe, shared by the async and the sync transport.

:class:`_Core` holds what outlives one request: the route table, NAT mapping, breakers and
retry budget, the in-flight gauge and counters, where records go, and the queue of attempts
whose response was dropped unclosed. It decides retries (:meth:`_Core.retry_delay`).
Thread-safe: counters change under one lock; the in-flight gauge is a dict of live attempts
(one atomic insert and one pop per attempt).

Internal failures are counted and logged at most once a minute, with the request's URL
redacted (:func:`~pipeline.probe.redaction.redact_url`); they never reach the caller.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import httpx

from pipeline.probe._record import Record, RecordContext, materialize
from pipeline.probe.breaker import OVERFLOW_BREAKER_NAME, BreakerRegistry, CircuitBreaker
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
from pipeline.probe.routes import OVERFLOW_ROUTE, RouteTable
from pipeline.probe.sink import EventSink, record_submitter
from pipeline.probe.tracecontext import new_span_id

if TYPE_CHECKING:
    from pipeline.probe._attempt import _Attempt

_log = logging.getLogger("egresswatch.probe")
_wall = time.time

_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_MAX_ORPHANS: Final = 10_000
_MAX_CLIENT_IPS: Final = 4096
_MAX_TARGETS: Final = 4096
_LOG_EVERY_S: Final = 60.0

TargetKey = tuple[str, str, int | None, str]  # scheme, host, port, path
Target = tuple[str, str, "CircuitBreaker | None"]  # upstream, route, breaker


def _uri_reference_works() -> bool:
    """Whether ``URL._uri_reference`` has the scheme/host/port/path we read (httpx 0.28)."""
    try:
        ref = httpx.URL("http://Example.test:8080/a/b?q=1")._uri_reference
        return (ref.scheme, ref.host, ref.port, ref.path) == ("http", "example.test", 8080, "/a/b")
    except Exception:  # noqa: BLE001 - any surprise: use the public API
        return False


_FAST_URL: Final = _uri_reference_works()


class _Core:
    """Everything one transport shares across requests. Thread-safe."""

    def __init__(self, config: ProbeConfig, sink: EventSink, *, pool_limit: int | None) -> None:
        self.sink = sink
        self.service = config.service
        self.routes = RouteTable(
            config.route_templates,
            max_routes_per_upstream=config.max_routes_per_upstream,
            max_upstreams=config.max_upstreams,
        )
        self.ctx = RecordContext(config.service, NatMapping(config.nat_rules))
        # Records go straight to a sink that takes them; any other sink gets events.
        self.put: Callable[[Record], None] = record_submitter(sink) or self._put_event
        self.breakers = (
            BreakerRegistry(config.breaker, max_breakers=config.max_upstreams)
            if config.breaker is not None
            else None
        )
        retry = config.retry
        self.retry = retry if retry is not None and retry.max_attempts > 1 else None
        self.retry_statuses: frozenset[int] = (
            self.retry.retry_on_status if self.retry is not None else frozenset()
        )
        self.budget = RetryBudget(self.retry) if self.retry is not None else None
        self.timeout_ext = config.timeouts.as_extension() if config.timeouts else None
        self.total_s = config.timeouts.total if config.timeouts else None
        self.phase_timings = config.phase_timings
        # Anything start() must add to a request beyond traceparent (one test on the hot path).
        self.options = self.timeout_ext is not None or self.phase_timings
        self.pool_limit = pool_limit
        self.pool_slots = pool_limit if pool_limit is not None else -1
        self.lock = threading.Lock()
        # request id -> upstream, for every attempt started and not yet ended. The request
        # id (the attempt's span id: 64 random bits, made for it) is a key already at hand;
        # id(attempt) cost a builtin call and a new int per insert and per pop.
        self.live: dict[str, str] = {}
        # next() of an itertools.count is one C call: an atomic increment under the GIL,
        # cheaper than the lock (see events_emitted).
        self.emitted = itertools.count()
        self.internal_errors = 0
        self.budget_refusals = 0
        self.retries = 0
        self.short_circuits = 0
        self.orphaned = 0
        self.orphans_dropped = 0
        self.orphans: deque[_Attempt] = deque()
        # The event loop of this transport's first async request: where orphans are drained
        # when the collector finds them in another thread. Asked once, not per request:
        # asyncio.get_running_loop() makes a getpid system call each time.
        self.loop: asyncio.AbstractEventLoop | None = None
        self._targets: dict[TargetKey, Target] = {}
        # Local address per live connection: anyio's get_extra_info costs ~15 us a call.
        # id(stream) -> (weak reference to the stream, address); bounded, cleared when full.
        self.client_ips: dict[int, tuple[weakref.ref[Any], str | None]] = {}
        # (stream, address) of the last lookup: one strong reference, to a closed stream at
        # worst, replaced by the next connection's.
        self.last_client_ip: tuple[Any, str | None] = (None, None)
        self._last_log = -_LOG_EVERY_S

    def _put_event(self, record: Record) -> None:
        self.sink.submit(materialize(record))

    # -- per logical request -----------------------------------------------------------

    def resolve(self, url: httpx.URL) -> Target:
        """``(upstream, route, breaker)`` of a request's URL, cached per scheme, host, port
        and path (not query: the route ignores it).

        The cache is exact: an upstream keeps its breaker, and a route once admitted for an
        upstream stays admitted. Overflow answers (the overflow route or breaker) are not
        cached, so each such request is still counted.
        """
        if _FAST_URL:
            ref = url._uri_reference
            key: TargetKey = (ref.scheme, ref.host, ref.port, ref.path)
        else:
            path = url.raw_path.decode("ascii", "replace").partition("?")[0]
            key = (url.scheme, url.raw_host.decode("ascii", "replace"), url.port, path)
        hit = self._targets.get(key)
        if hit is not None:
            return hit
        return self._resolve(key)

    def _resolve(self, key: TargetKey) -> Target:
        scheme, host, port, path = key
        host = host or "localhost"
        if ":" in host:
            host = f"[{host}]"
        upstream = f"{host}:{port if port is not None else _DEFAULT_PORTS.get(scheme, 0)}"
        route = self.routes.route(upstream, path or "/")
        breaker = self.breakers.get(upstream) if self.breakers is not None else None
        target = (upstream, route, breaker)
        if route != OVERFLOW_ROUTE and (breaker is None or breaker.name != OVERFLOW_BREAKER_NAME):
            targets = self._targets
            if len(targets) >= _MAX_TARGETS:
                targets.clear()
            targets[key] = target
        return target

    def may_retry_status(self, attempt: _Attempt, status: int) -> bool:
        """Cheap pre-check: could a response with this status be retried at all?"""
        config = self.retry
        if (
            config is None
            or status not in config.retry_on_status
            or attempt.attempt >= config.max_attempts
            or not attempt.replayable
        ):
            return False
        try:
            return is_retryable(
                method=attempt.method,
                outcome="http_error",
                error_class=None,
                status_code=status,
                config=config,
            )
        except Exception as exc:  # noqa: BLE001 - I5
            self.internal_error(exc, attempt.request)
            return False

    def retry_delay(
        self,
        attempt: _Attempt,
        outcome: str,
        error_class: str | None,
        status_code: int | None = None,
        headers: httpx.Headers | None = None,
    ) -> float | None:
        """Seconds to wait before the next attempt, or None: this attempt is the last."""
        config = self.retry
        if config is None or attempt.attempt >= config.max_attempts or self.budget is None:
            return None
        try:
            if not is_retryable(
                method=attempt.method,
                outcome=outcome,
                error_class=error_class,
                status_code=status_code,
                config=config,
            ):
                return None
            if not attempt.replayable and error_class not in NOTHING_SENT_ERROR_CLASSES:
                return None
            breaker = attempt.breaker
            if breaker is not None and breaker.state == "open":
                return None  # this failure opened it: a retry would only be short-circuited
            delay: float | None = backoff_delay(attempt.attempt, config)
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
            self.internal_error(exc, attempt.request)
            return None

    # -- events that need no running attempt ---------------------------------------------

    def emit_breaker_open(self, attempt: _Attempt, breaker: CircuitBreaker) -> None:
        """The event of an attempt the breaker refused: nothing was sent, nothing timed."""
        with self.lock:
            self.short_circuits += 1
        try:
            self.put(
                Record(
                    self.ctx,
                    _wall(),
                    0.0,
                    0.0,
                    0.0,
                    attempt.method,
                    attempt.route,
                    attempt.upstream,
                    "breaker_open",
                    "breaker_open",
                    attempt.trace_id,
                    new_span_id(),
                    attempt.logical_id,
                    attempt.attempt,
                    None,
                    attempt.declared_bytes,
                    0,
                    True,
                    None,
                    breaker.state,
                    None,
                    None,
                    None,
                )
            )
            next(self.emitted)
        except Exception as exc:  # noqa: BLE001 - I5
            self.internal_error(exc, attempt.request)

    def client_ip(self, stream: Any) -> str | None:
        """The local address of a connection (httpcore network stream), cached per stream.

        The last stream looked up is also kept (``last_client_ip``, checked by the caller
        first): a keep-alive connection brings the same stream request after request.
        """
        cache = self.client_ips
        key = id(stream)
        hit = cache.get(key)
        if hit is not None and hit[0]() is stream:
            address = hit[1]
        else:
            address = _client_ip(stream)
            try:
                ref = weakref.ref(stream)
            except TypeError:  # not weak-referenceable: no cache
                return address
            if len(cache) >= _MAX_CLIENT_IPS:
                cache.clear()
            cache[key] = (ref, address)
        self.last_client_ip = (stream, address)
        return address

    # -- gauges, orphans, internal errors ------------------------------------------------

    @property
    def events_emitted(self) -> int:
        """Events handed to the sink. ``repr`` is how an ``itertools.count`` tells its value
        without counting one more: ``count(12)``."""
        return int(repr(self.emitted)[6:-1])

    def in_flight(self) -> dict[str, int]:
        """Attempts started and not yet ended, per upstream."""
        counts: dict[str, int] = {}
        for upstream in list(self.live.values()):  # one C-level copy: atomic under the GIL
            counts[upstream] = counts.get(upstream, 0) + 1
        return counts

    def orphan(self, attempt: _Attempt) -> None:
        """Called from ``__del__``: only queue (no lock, no I/O); drained later.

        An async attempt's queue is drained on the event loop right after: the loop running
        in this thread (the collector ran on it), else this transport's first loop.
        """
        if len(self.orphans) < _MAX_ORPHANS:
            self.orphans.append(attempt)
        else:
            self.orphans_dropped += 1
        if not attempt.asynchronous:
            return
        loop = asyncio.events._get_running_loop() or self.loop
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
            attempt.finish(None, None, body_complete=False, end=attempt.t_last)

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
