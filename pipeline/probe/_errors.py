"""The probe's exceptions and the one mapping from a failure to (outcome, error_class).

Exceptions the probe raises itself (both are ``httpx`` exceptions, so callers handle them
like the transport errors they already handle)::

    httpx.TransportError
      ├── CircuitOpenError        the upstream's breaker is open; nothing was sent
      └── httpx.TimeoutException
            └── DeadlineExceeded  the probe's total per-attempt deadline passed

Any other exception is the caller's or the inner transport's and is re-raised unchanged.

:func:`classify_exception` is the only place a foreign exception becomes an outcome. It
walks the class hierarchy (httpx first, then httpcore for inner transports that leak its
exceptions, then builtins) once per exception type and caches the answer; connect errors
are refined by the exception chain (``__cause__``/``__context__``, exception groups), where
httpcore and anyio keep the socket error: refused, DNS or TLS.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Final

import httpcore
import httpx

from pipeline.schema import ErrorClass, Outcome

__all__ = [
    "EXCEPTION_TABLE",
    "CircuitOpenError",
    "DeadlineExceeded",
    "classify_exception",
    "classify_status",
]


class CircuitOpenError(httpx.TransportError):
    """The circuit breaker of ``upstream`` is open: the request was not sent."""

    def __init__(self, upstream: str, *, request: httpx.Request | None = None) -> None:
        super().__init__(f"circuit breaker open for {upstream}", request=request)
        self.upstream = upstream


class DeadlineExceeded(httpx.TimeoutException):
    """The probe's total per-attempt deadline (``Timeouts.total``) passed."""

    def __init__(self, total_s: float, *, request: httpx.Request | None = None) -> None:
        super().__init__(f"total deadline of {total_s:g}s exceeded", request=request)
        self.total_s = total_s


Classification = tuple[Outcome, ErrorClass]

# Most specific first is not needed: the lookup walks each exception's MRO and takes the
# first class found here, so a subclass always wins over its base.
EXCEPTION_TABLE: Final[dict[type[BaseException], Classification]] = {
    CircuitOpenError: ("breaker_open", "breaker_open"),
    DeadlineExceeded: ("timeout", "total_timeout"),
    httpx.ConnectTimeout: ("timeout", "connect_timeout"),
    httpx.ReadTimeout: ("timeout", "read_timeout"),
    httpx.WriteTimeout: ("timeout", "write_timeout"),
    httpx.PoolTimeout: ("timeout", "pool_timeout"),
    httpx.TimeoutException: ("timeout", "read_timeout"),
    httpx.ConnectError: ("connect_error", "connect_failed"),
    httpx.ProxyError: ("connect_error", "connect_failed"),
    httpx.ReadError: ("transport_error", "read_error"),
    httpx.WriteError: ("transport_error", "write_error"),
    httpx.CloseError: ("transport_error", "read_error"),
    httpx.RemoteProtocolError: ("protocol_error", "remote_protocol_error"),
    httpx.LocalProtocolError: ("protocol_error", "local_protocol_error"),
    httpx.UnsupportedProtocol: ("protocol_error", "local_protocol_error"),
    httpx.DecodingError: ("protocol_error", "remote_protocol_error"),
    httpx.TooManyRedirects: ("protocol_error", "remote_protocol_error"),
    httpx.StreamError: ("protocol_error", "local_protocol_error"),
    httpcore.ConnectTimeout: ("timeout", "connect_timeout"),
    httpcore.ReadTimeout: ("timeout", "read_timeout"),
    httpcore.WriteTimeout: ("timeout", "write_timeout"),
    httpcore.PoolTimeout: ("timeout", "pool_timeout"),
    httpcore.ConnectError: ("connect_error", "connect_failed"),
    httpcore.ReadError: ("transport_error", "read_error"),
    httpcore.WriteError: ("transport_error", "write_error"),
    httpcore.RemoteProtocolError: ("protocol_error", "remote_protocol_error"),
    httpcore.LocalProtocolError: ("protocol_error", "local_protocol_error"),
    httpcore.UnsupportedProtocol: ("protocol_error", "local_protocol_error"),
    # The caller gave up: task cancellation, Ctrl-C, interpreter exit, a closed generator.
    asyncio.CancelledError: ("cancelled", "cancelled"),
    KeyboardInterrupt: ("cancelled", "cancelled"),
    SystemExit: ("cancelled", "cancelled"),
    GeneratorExit: ("cancelled", "cancelled"),
    # socket.timeout is TimeoutError: a socket read that waited too long. (The probe's own
    # deadline, from asyncio.timeout(), is turned into DeadlineExceeded before this.)
    TimeoutError: ("timeout", "read_timeout"),
    ConnectionRefusedError: ("connect_error", "connection_refused"),
    socket.gaierror: ("connect_error", "dns_failure"),
    ssl.SSLError: ("connect_error", "tls_error"),
    ssl.CertificateError: ("connect_error", "tls_error"),
    ConnectionError: ("transport_error", "read_error"),
}
_UNEXPECTED: Final[Classification] = ("transport_error", "unexpected")
_CONNECT_CAUSES: Final[dict[type[BaseException], ErrorClass]] = {
    ConnectionRefusedError: "connection_refused",
    socket.gaierror: "dns_failure",
    ssl.SSLError: "tls_error",
    ssl.CertificateError: "tls_error",
}
_CHAIN_LIMIT: Final = 16
_by_type: dict[type[BaseException], Classification] = {}


def _lookup(kind: type[BaseException]) -> Classification:
    hit = _by_type.get(kind)
    if hit is None:
        hit = next((EXCEPTION_TABLE[k] for k in kind.__mro__ if k in EXCEPTION_TABLE), _UNEXPECTED)
        if len(_by_type) < 1024:
            _by_type[kind] = hit
    return hit


def _connect_cause(exc: BaseException) -> ErrorClass:
    """Refine a connect error from the socket/TLS error somewhere in its chain."""
    pending: list[BaseException] = [exc]
    seen = 0
    while pending and seen < _CHAIN_LIMIT:
        current = pending.pop()
        seen += 1
        for kind, error_class in _CONNECT_CAUSES.items():
            if isinstance(current, kind):
                return error_class
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)
    return "connect_failed"


def classify_exception(exc: BaseException) -> Classification:
    """(outcome, error_class) of an attempt that ended with ``exc``. Never raises."""
    outcome, error_class = _lookup(type(exc))
    if outcome == "connect_error" and error_class == "connect_failed":
        error_class = _connect_cause(exc)
    return outcome, error_class


def classify_status(status_code: int) -> tuple[Outcome, ErrorClass | None]:
    """(outcome, error_class) of an attempt that got a response with this status."""
    if status_code < 400:
        return "ok", None
    if status_code < 500:
        return "http_error", "http_4xx"
    return "http_error", "http_5xx"
