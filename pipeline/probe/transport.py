"""The probe: httpx transports that observe every outbound request, async and sync.

One line in a service::

    client = httpx.AsyncClient(transport=ProbeTransport(ProbeConfig(service="checkout"), sink))

Each request runs an attempt loop: ask the upstream's circuit breaker, send through the
inner transport (``httpx.AsyncHTTPTransport`` by default), classify the result, and end the
attempt with exactly one :class:`~pipeline.schema.ProbeEvent` when its body is fully read or
closed (or when it fails, is cancelled, or is dropped unclosed and garbage-collected). A
failed attempt is retried when the retry policy, the request's replayability and the retry
budget all allow it; every attempt has its own event, ``attempt`` 1, 2, ... under one
``logical_request_id``.

Contract with the caller (invariant I5): the probe never raises into the caller except for
what it is configured to do (:class:`CircuitOpenError` when the breaker is open,
:class:`DeadlineExceeded` past ``Timeouts.total``); the inner transport's exceptions reach
the caller unchanged; a failure inside the probe is counted in ``stats().internal_errors``
and the call goes on.

Trace context: each attempt sends a W3C ``traceparent`` (the caller's, continued, or a new
trace). One the probe added is taken off ``request.headers`` again once the response
headers are in (kept on a redirect, so that httpx copies it to the next hop): the caller's
request then has the headers the caller built, and httpx's cookie code does not walk one
header more. A ``traceparent`` the caller gave stays, with the value sent. The event has
the ids (``trace_id``, ``request_id``).

The async transport uses asyncio (``asyncio.timeout_at``, ``asyncio.sleep``); trio is not
supported. ``pool_wait_ms``: measured through httpcore's ``trace`` extension when
``phase_timings`` is on; otherwise 0.0 when the pool had a free slot at the start of the
attempt (the in-flight count of this transport was within the pool limit, so httpcore could
not make it wait), and ``None`` when it did not or when the limit is unknown (an inner
transport given by the caller without ``limits``).
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Self

import httpx

from pipeline.probe._base import DEFAULT_LIMITS, ProbeStats, _Base, _pool_limit
from pipeline.probe._core import _Core
from pipeline.probe._direct import (
    AsyncDirect,
    AsyncResponseStream,
    SyncDirect,
    as_httpx,
    core_request,
    direct_pool,
    httpx_response,
)
from pipeline.probe._errors import (
    CircuitOpenError,
    DeadlineExceeded,
    classify_exception,
    classify_status,
)
from pipeline.probe._streams import _AsyncAttempt, _SyncAttempt
from pipeline.probe.config import ProbeConfig
from pipeline.probe.sink import EventSink

__all__ = ["DEFAULT_LIMITS", "ProbeStats", "ProbeTransport", "SyncProbeTransport"]


class ProbeTransport(_Base, httpx.AsyncBaseTransport):
    """Async probe transport. ``transport`` defaults to ``httpx.AsyncHTTPTransport(limits)``."""

    def __init__(
        self,
        config: ProbeConfig,
        sink: EventSink,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        limits: httpx.Limits | None = None,
    ) -> None:
        if transport is None:
            limits = limits or DEFAULT_LIMITS
            transport = httpx.AsyncHTTPTransport(limits=limits)
        self._inner = transport
        self._core = _Core(config, sink, pool_limit=_pool_limit(limits))
        pool = direct_pool(transport)  # httpx's own transport: its pool, without its wrapper
        self._pool = pool
        self._send = (
            transport.handle_async_request
            if pool is None
            else AsyncDirect(pool).handle_async_request
        )

    @classmethod
    def client(cls, service: str, sink: EventSink, **client_kwargs: object) -> httpx.AsyncClient:
        """``httpx.AsyncClient`` with a probe of default config for ``service``."""
        return httpx.AsyncClient(
            transport=cls(ProbeConfig(service=service), sink),
            **client_kwargs,  # type: ignore[arg-type]
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        core = self._core
        if core.orphans:
            core.drain_orphans()
        try:
            att = _AsyncAttempt(core, request)
        except Exception as exc:  # noqa: BLE001 - I5: send unobserved rather than fail
            core.internal_error(exc, request)
            return await self._inner.handle_async_request(request)
        total = core.total_s
        # Only a deadline needs the loop per request: get_running_loop() costs a syscall.
        loop = asyncio.get_running_loop() if total is not None else None
        if core.loop is None:
            core.loop = loop or asyncio.get_running_loop()  # for orphans (see _Core.loop)
        pool = self._pool
        while True:
            started = att.start()
            if started is None:
                return await self._inner.handle_async_request(request)
            if not started:
                delay = core.retry_delay(att, "breaker_open", "breaker_open")
                if delay is None:
                    raise CircuitOpenError(att.upstream, request=request)
                await asyncio.sleep(delay)
                att = att.successor()
                continue
            deadline = None if loop is None or total is None else loop.time() + total
            failure: BaseException | None = None
            try:
                if deadline is not None:
                    async with asyncio.timeout_at(deadline):
                        response = await self._send(request)
                elif pool is None:
                    response = await self._send(request)
                else:  # AsyncDirect's steps, inline: one coroutine fewer (see _direct)
                    assert isinstance(request.stream, httpx.AsyncByteStream)  # as httpx does
                    try:
                        sent = await pool.handle_async_request(core_request(request))
                    except Exception as exc:  # noqa: BLE001 - mapped, as httpx does
                        raise as_httpx(exc)  # noqa: B904 - its cause is exc already
                    response = httpx_response(sent, AsyncResponseStream)
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the event
                failure = exc
            if failure is not None:
                error = failure
                if total is not None and type(failure) is TimeoutError:  # our deadline
                    error = DeadlineExceeded(total, request=request)
                    error.__cause__ = failure
                outcome, error_class = classify_exception(error)
                att.finish(outcome, error_class)
                delay = None
                if outcome != "cancelled":
                    delay = core.retry_delay(att, outcome, error_class)
                if delay is None:
                    raise error
                failure = None
                del error
                await asyncio.sleep(delay)
                att = att.successor()
                continue
            try:
                att.got_response(response, deadline)
            except Exception as exc:  # noqa: BLE001 - I5
                core.internal_error(exc, request)
                att.finish(None, None, body_complete=False)
                return response
            status = response.status_code
            if status in core.retry_statuses and core.may_retry_status(att, status):
                # Read the failed body first: that ends the attempt (its event, the breaker
                # told) before we decide, keeps the connection reusable, and leaves a
                # response we can still hand back if no retry is granted.
                await response.aread()
                delay = core.retry_delay(
                    att,
                    "http_error",
                    classify_status(status)[1],
                    status,
                    response.headers,
                )
                if delay is not None:
                    await asyncio.sleep(delay)
                    att = att.successor()
                    continue
            return response

    async def aclose(self) -> None:
        self._core.drain_orphans()
        await self._inner.aclose()

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self._core.drain_orphans()
        await self._inner.__aexit__(exc_type, exc_value, traceback)


class SyncProbeTransport(_Base, httpx.BaseTransport):
    """Sync probe transport. ``transport`` defaults to ``httpx.HTTPTransport(limits)``.

    The total deadline is enforced without threads: every httpx timeout of the attempt is
    capped at ``Timeouts.total``, the deadline is checked when the headers arrive and after
    each body chunk, and a httpx timeout raised past the deadline is recorded as
    ``total_timeout`` (the caller still gets httpx's exception). So an attempt may overrun
    the deadline by at most one socket wait, itself capped at ``total``.
    """

    def __init__(
        self,
        config: ProbeConfig,
        sink: EventSink,
        *,
        transport: httpx.BaseTransport | None = None,
        limits: httpx.Limits | None = None,
    ) -> None:
        if transport is None:
            limits = limits or DEFAULT_LIMITS
            transport = httpx.HTTPTransport(limits=limits)
        self._inner = transport
        self._core = _Core(config, sink, pool_limit=_pool_limit(limits))
        pool = direct_pool(transport)  # httpx's own transport: its pool, without its wrapper
        self._send = transport.handle_request if pool is None else SyncDirect(pool).handle_request

    @classmethod
    def client(cls, service: str, sink: EventSink, **client_kwargs: object) -> httpx.Client:
        """``httpx.Client`` with a probe of default config for ``service``."""
        return httpx.Client(
            transport=cls(ProbeConfig(service=service), sink),
            **client_kwargs,  # type: ignore[arg-type]
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        core = self._core
        if core.orphans:
            core.drain_orphans()
        try:
            att = _SyncAttempt(core, request)
        except Exception as exc:  # noqa: BLE001 - I5: send unobserved rather than fail
            core.internal_error(exc, request)
            return self._inner.handle_request(request)
        total = core.total_s
        while True:
            started = att.start()
            if started is None:
                return self._inner.handle_request(request)
            if not started:
                delay = core.retry_delay(att, "breaker_open", "breaker_open")
                if delay is None:
                    raise CircuitOpenError(att.upstream, request=request)
                time.sleep(delay)
                att = att.successor()
                continue
            deadline = None if total is None else att.t0 + total
            failure: BaseException | None = None
            try:
                response = self._send(request)
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the event
                failure = exc
            if failure is not None:
                outcome, error_class = classify_exception(failure)
                if (
                    deadline is not None
                    and outcome == "timeout"
                    and time.perf_counter() >= deadline
                ):
                    error_class = "total_timeout"
                att.finish(outcome, error_class)
                delay = None
                if outcome != "cancelled":
                    delay = core.retry_delay(att, outcome, error_class)
                if delay is None:
                    raise failure
                failure = None
                time.sleep(delay)
                att = att.successor()
                continue
            try:
                att.got_response(response, deadline)
            except Exception as exc:  # noqa: BLE001 - I5
                core.internal_error(exc, request)
                att.finish(None, None, body_complete=False)
                return response
            if deadline is not None and att.t_headers > deadline:
                att.finish("timeout", "total_timeout", body_complete=False)
                response.close()
                raise DeadlineExceeded(total or 0.0, request=request)
            status = response.status_code
            if status in core.retry_statuses and core.may_retry_status(att, status):
                response.read()  # ends the attempt first; see ProbeTransport
                delay = core.retry_delay(
                    att,
                    "http_error",
                    classify_status(status)[1],
                    status,
                    response.headers,
                )
                if delay is not None:
                    time.sleep(delay)
                    att = att.successor()
                    continue
            return response

    def close(self) -> None:
        self._core.drain_orphans()
        self._inner.close()

    def __enter__(self) -> Self:
        self._inner.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self._core.drain_orphans()
        self._inner.__exit__(exc_type, exc_value, traceback)
