"""Secrets in userinfo, query strings and headers never reach an event or a probe log line."""

from __future__ import annotations

import logging

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.probe import MemorySink, ProbeConfig, ProbeTransport, SyncProbeTransport
from pipeline.schema import ProbeEvent, encode_event

pytestmark = pytest.mark.timeout(60)

secrets = st.from_regex(r"S3CR3T[A-Za-z0-9]{6,20}", fullmatch=True)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class _FlakySink(MemorySink):
    """Fails once, so the probe logs an internal error (with the request's URL, redacted)."""

    failed = False

    def submit(self, event: ProbeEvent) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("sink hiccup")
        super().submit(event)


def _leaks(secret: str, sink: MemorySink, capture: _Capture) -> list[str]:
    found = [encode_event(e).decode() for e in sink.events if secret in encode_event(e).decode()]
    return found + [line for line in capture.lines if secret in line]


def _request_with(client: httpx.Client, base: str, secret: str, path: str) -> httpx.Response:
    scheme, rest = base.split("://", 1)
    return client.get(
        f"{scheme}://user{secret}:pw{secret}@{rest}{path}?token={secret}&q=1#frag{secret}",
        headers={
            "Authorization": f"Bearer {secret}",
            "Proxy-Authorization": f"Basic {secret}",
            "Cookie": f"session={secret}",
            "X-API-Key": secret,
        },
    )


@settings(max_examples=60, deadline=None)
@given(secret=secrets, status=st.sampled_from([200, 404, 503]))
def test_no_secret_in_events_or_logs(secret: str, status: int) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={"Set-Cookie": f"sid={secret}"}, content=b"body")

    sink = _FlakySink()
    capture = _Capture()
    logger = logging.getLogger("egresswatch")
    logger.addHandler(capture)
    logger.setLevel(logging.DEBUG)
    try:
        transport = SyncProbeTransport(
            ProbeConfig(service="svc"), sink, transport=httpx.MockTransport(handler)
        )
        with httpx.Client(transport=transport) as client:
            for path in ("/v1/orders", "/v1/orders/42"):
                _request_with(client, "https://api.test", secret, path)
    finally:
        logger.removeHandler(capture)
    assert transport.stats().internal_errors == 1
    assert any("internal error" in line for line in capture.lines)  # the log path ran
    assert len(sink.events) >= 1
    assert _leaks(secret, sink, capture) == []


@settings(max_examples=15, deadline=None)
@given(secret=secrets)
def test_no_secret_against_a_real_upstream(upstream, raw, secret: str) -> None:
    sink = MemorySink()
    capture = _Capture()
    logger = logging.getLogger("egresswatch")
    logger.addHandler(capture)
    logger.setLevel(logging.DEBUG)
    try:
        transport = SyncProbeTransport(ProbeConfig(service="svc", retry=None), sink)
        with httpx.Client(transport=transport) as client:
            echoed = _request_with(client, upstream.base, secret, "/echo").json()
            with pytest.raises(httpx.ConnectError):
                _request_with(client, raw.refused, secret, "/x")
    finally:
        logger.removeHandler(capture)
    assert secret in echoed["query"]  # the request itself is untouched...
    assert len(sink.events) == 2
    assert _leaks(secret, sink, capture) == []  # ...but nothing of it is recorded


async def test_async_no_secret_in_events(upstream) -> None:
    secret = "S3CR3Tasync0123456"
    sink = MemorySink()
    transport = ProbeTransport(ProbeConfig(service="svc"), sink)
    async with httpx.AsyncClient(transport=transport) as client:
        host = upstream.base.split("://", 1)[1]
        await client.get(
            f"http://u:{secret}@{host}/echo?api_key={secret}",
            headers={"Authorization": secret, "Cookie": secret},
        )
    (event,) = sink.events
    assert secret not in encode_event(event).decode()
    assert event.route == "/echo" and event.upstream == host
