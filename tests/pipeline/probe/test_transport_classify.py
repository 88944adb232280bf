"""The one mapping from a failure to (outcome, error_class): a table test."""

from __future__ import annotations

import asyncio
import socket
import ssl

import httpcore
import httpx
import pytest

from pipeline.probe import CircuitOpenError, DeadlineExceeded, classify_exception
from pipeline.probe._errors import EXCEPTION_TABLE, classify_status
from pipeline.schema import ERROR_CLASSES, OUTCOMES


def chained(outer: BaseException, *causes: BaseException) -> BaseException:
    """``outer`` raised from ``causes[0]`` raised from ``causes[1]``..., as httpx does."""
    current = outer
    for cause in causes:
        current.__cause__ = cause
        current = cause
    return outer


def anyio_refused() -> BaseException:
    """anyio's happy-eyeballs error: the socket error is the context of an OSError."""
    inner = OSError("All connection attempts failed")
    inner.__context__ = ConnectionRefusedError(111, "Connect call failed")
    return chained(
        httpx.ConnectError("All connection attempts failed"), httpcore.ConnectError(), inner
    )


TABLE = [
    (httpx.ConnectTimeout("t"), "timeout", "connect_timeout"),
    (httpx.ReadTimeout("t"), "timeout", "read_timeout"),
    (httpx.WriteTimeout("t"), "timeout", "write_timeout"),
    (httpx.PoolTimeout("t"), "timeout", "pool_timeout"),
    (DeadlineExceeded(1.0), "timeout", "total_timeout"),
    (TimeoutError(), "timeout", "read_timeout"),
    (httpx.ConnectError("x"), "connect_error", "connect_failed"),
    (
        chained(httpx.ConnectError("x"), ConnectionRefusedError()),
        "connect_error",
        "connection_refused",
    ),
    (anyio_refused(), "connect_error", "connection_refused"),
    (
        chained(httpx.ConnectError("x"), httpcore.ConnectError(), socket.gaierror(-2, "nope")),
        "connect_error",
        "dns_failure",
    ),
    (
        chained(httpx.ConnectError("x"), httpcore.ConnectError(), ssl.SSLError(1, "bad")),
        "connect_error",
        "tls_error",
    ),
    (httpx.ReadError("x"), "transport_error", "read_error"),
    (httpx.WriteError("x"), "transport_error", "write_error"),
    (httpx.RemoteProtocolError("x"), "protocol_error", "remote_protocol_error"),
    (httpx.LocalProtocolError("x"), "protocol_error", "local_protocol_error"),
    (httpx.UnsupportedProtocol("x"), "protocol_error", "local_protocol_error"),
    (httpx.ProxyError("x"), "connect_error", "connect_failed"),
    (httpcore.ReadTimeout("x"), "timeout", "read_timeout"),
    (httpcore.ConnectError("x"), "connect_error", "connect_failed"),
    (CircuitOpenError("h:1"), "breaker_open", "breaker_open"),
    (asyncio.CancelledError(), "cancelled", "cancelled"),
    (KeyboardInterrupt(), "cancelled", "cancelled"),
    (GeneratorExit(), "cancelled", "cancelled"),
    (ConnectionRefusedError(), "connect_error", "connection_refused"),
    (ConnectionResetError(), "transport_error", "read_error"),
    (ValueError("a bug somewhere"), "transport_error", "unexpected"),
    (RuntimeError("x"), "transport_error", "unexpected"),
]


@pytest.mark.parametrize(("exc", "outcome", "error_class"), TABLE)
def test_classification_table(exc, outcome, error_class) -> None:
    assert classify_exception(exc) == (outcome, error_class)


def test_every_entry_is_in_the_schema() -> None:
    for outcome, error_class in EXCEPTION_TABLE.values():
        assert outcome in OUTCOMES and error_class in ERROR_CLASSES


def test_cyclic_chain_terminates() -> None:
    first, second = httpx.ConnectError("a"), OSError("b")
    first.__cause__, second.__context__ = second, first
    assert classify_exception(first) == ("connect_error", "connect_failed")


def test_exception_group_in_chain() -> None:
    group = ExceptionGroup("many", [OSError("x"), socket.gaierror(-3, "temp")])
    assert classify_exception(chained(httpx.ConnectError("x"), group))[1] == "dns_failure"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, ("ok", None)),
        (304, ("ok", None)),
        (400, ("http_error", "http_4xx")),
        (499, ("http_error", "http_4xx")),
        (500, ("http_error", "http_5xx")),
        (599, ("http_error", "http_5xx")),
    ],
)
def test_status_classification(status, expected) -> None:
    assert classify_status(status) == expected
