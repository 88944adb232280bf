"""SyncProbeTransport against real sockets: exactly one valid event per attempt."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from pipeline.probe import (
    DeadlineExceeded,
    MemorySink,
    ProbeConfig,
    SyncProbeTransport,
    Timeouts,
    trace_context,
)
from pipeline.schema import ProbeEvent, decode_event, encode_event

pytestmark = pytest.mark.timeout(30)

QUICK = Timeouts(connect=0.3, read=0.3, write=0.3, pool=0.3)


def probe(sink: MemorySink, **config: Any) -> SyncProbeTransport:
    config.setdefault("retry", None)
    return SyncProbeTransport(ProbeConfig(service="billing", **config), sink)


def only_event(sink: MemorySink) -> ProbeEvent:
    events = sink.events
    assert len(events) == 1, events
    assert decode_event(encode_event(events[0])) == events[0]
    return events[0]


def test_ok(upstream) -> None:
    sink = MemorySink()
    with httpx.Client(transport=probe(sink), base_url=upstream.base) as client:
        assert client.get("/ok").text == "ok"
    event = only_event(sink)
    assert (event.outcome, event.status_code, event.bytes_received) == ("ok", 200, 2)
    assert event.internal_ip == "127.0.0.1" and event.external_ip is not None
    assert event.service == "billing" and event.body_complete and event.pool_wait_ms == 0.0


@pytest.mark.parametrize(("code", "error_class"), [(404, "http_4xx"), (503, "http_5xx")])
def test_http_errors(upstream, code, error_class) -> None:
    sink = MemorySink()
    with httpx.Client(transport=probe(sink), base_url=upstream.base) as client:
        assert client.get(f"/status/{code}").status_code == code
    event = only_event(sink)
    assert (event.outcome, event.error_class, event.status_code) == (
        "http_error",
        error_class,
        code,
    )


@pytest.mark.parametrize(
    ("target", "exc_type", "outcome", "error_class"),
    [
        ("silent", httpx.ReadTimeout, "timeout", "read_timeout"),
        ("blackhole", httpx.ConnectTimeout, "timeout", "connect_timeout"),
        ("refused", httpx.ConnectError, "connect_error", "connection_refused"),
        ("dns", httpx.ConnectError, "connect_error", "dns_failure"),
        ("tls", httpx.ConnectError, "connect_error", "tls_error"),
        ("garbage", httpx.RemoteProtocolError, "protocol_error", "remote_protocol_error"),
    ],
)
def test_failures(upstream, raw, target, exc_type, outcome, error_class) -> None:
    url = {
        "silent": raw.silent.base,
        "blackhole": raw.blackhole.base,
        "refused": raw.refused,
        "dns": "http://nowhere.invalid",
        "tls": f"https://127.0.0.1:{upstream.port}",
        "garbage": raw.garbage.base,
    }[target]
    sink = MemorySink()
    with httpx.Client(transport=probe(sink, timeouts=QUICK)) as client:
        with pytest.raises(exc_type):
            client.get(url + "/items/9?x=1")
    event = only_event(sink)
    assert (event.outcome, event.error_class) == (outcome, error_class)
    assert event.route == "/items/{id}" and event.severity == "critical"


def test_body_cut_by_peer(raw) -> None:
    sink = MemorySink()
    with httpx.Client(transport=probe(sink)) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(raw.close_early.base)
    event = only_event(sink)
    assert event.outcome == "protocol_error" and event.status_code == 200
    assert event.bytes_received == 10 and not event.body_complete


def test_total_deadline_before_headers(upstream) -> None:
    """Sync: the socket timeouts are capped at the deadline; the caller keeps httpx's type."""
    sink = MemorySink()
    transport = probe(sink, timeouts=Timeouts(total=0.3))
    with httpx.Client(transport=transport, base_url=upstream.base) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.get("/slow?delay=3")
    event = only_event(sink)
    assert (event.outcome, event.error_class) == ("timeout", "total_timeout")
    assert 250 <= event.elapsed_ms < 2000


def test_total_deadline_during_body(upstream) -> None:
    sink = MemorySink()
    transport = probe(sink, timeouts=Timeouts(total=0.4))
    with httpx.Client(transport=transport, base_url=upstream.base) as client:
        with pytest.raises(DeadlineExceeded):
            client.get("/stream?chunks=40&size=100&delay=0.05")
    event = only_event(sink)
    assert (event.outcome, event.error_class) == ("timeout", "total_timeout")
    assert not event.body_complete and 0 < event.bytes_received < 4000


def test_partial_read_then_close(upstream) -> None:
    sink = MemorySink()
    with httpx.Client(transport=probe(sink), base_url=upstream.base) as client:
        with client.stream("GET", "/stream?chunks=10&size=1000&delay=0.01") as response:
            for _ in response.iter_raw():
                break
    event = only_event(sink)
    assert event.outcome == "ok" and not event.body_complete
    assert 0 < event.bytes_received < 10_000


def test_response_never_closed(upstream) -> None:
    sink = MemorySink()
    transport = probe(sink)
    with httpx.Client(transport=transport, base_url=upstream.base) as client:
        response = client.send(client.build_request("GET", "/stream"), stream=True)
        next(response.iter_raw())
        del response
        gc.collect()
        assert sink.events == []  # queued by the finalizer, not submitted from it
        stats = transport.stats()  # drains
        event = only_event(sink)
        assert event.outcome == "ok" and not event.body_complete and event.bytes_received > 0
        assert stats.orphaned_responses == 1
        client.get("/ok")
    assert len(sink.events) == 2


class _InterruptingStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream) -> None:
        self.inner = inner

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            yield chunk
            raise KeyboardInterrupt

    def close(self) -> None:
        self.inner.close()


class _Interrupting(httpx.HTTPTransport):
    """Real transport whose body read is interrupted (Ctrl-C) after the first chunk."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        response.stream = _InterruptingStream(response.stream)  # type: ignore[arg-type]
        return response


def test_keyboard_interrupt_during_body(upstream) -> None:
    sink = MemorySink()
    transport = SyncProbeTransport(
        ProbeConfig(service="svc", retry=None), sink, transport=_Interrupting()
    )
    with httpx.Client(transport=transport, base_url=upstream.base) as client:
        with pytest.raises(KeyboardInterrupt):
            client.get("/stream?chunks=5&size=100")
    event = only_event(sink)
    assert (event.outcome, event.error_class) == ("cancelled", "cancelled")
    assert not event.body_complete and event.bytes_received == 100


def test_trace_context_sent_upstream(upstream) -> None:
    sink = MemorySink()
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    with httpx.Client(transport=probe(sink), base_url=upstream.base) as client:
        with trace_context(trace_id=trace_id, sampled=False):
            response = client.get("/echo")
    event = only_event(sink)
    assert dict(response.json()["headers"])["traceparent"] == f"00-{trace_id}-{event.request_id}-00"


def test_threads_share_one_transport(upstream) -> None:
    sink = MemorySink()
    transport = probe(sink)
    with httpx.Client(transport=transport, base_url=upstream.base) as client:

        def work(index: int) -> int:
            return client.get(f"/status/{200 + index % 2}").status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            codes = list(pool.map(work, range(160)))
    assert sorted(set(codes)) == [200, 201]
    events = sink.events
    assert len(events) == 160
    assert len({e.request_id for e in events}) == 160
    stats = transport.stats()
    assert stats.in_flight_total == 0 and stats.events_emitted == 160


def test_close_passes_through(upstream) -> None:
    closed: list[bool] = []

    class Spy(httpx.HTTPTransport):
        def close(self) -> None:
            closed.append(True)
            super().close()

    transport = SyncProbeTransport(ProbeConfig(service="svc"), MemorySink(), transport=Spy())
    client = httpx.Client(transport=transport)
    client.get(upstream.url("/ok"))
    client.close()
    assert closed == [True]
