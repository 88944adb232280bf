"""ProbeTransport (async) against real sockets: exactly one valid event per attempt."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import json
import ssl
import threading
from typing import Any

import httpx
import pytest

from pipeline.probe import (
    CircuitOpenError,
    DeadlineExceeded,
    MemorySink,
    ProbeConfig,
    ProbeTransport,
    Timeouts,
    parse_traceparent,
    trace_context,
)
from pipeline.schema import ProbeEvent, decode_event, encode_event

pytestmark = pytest.mark.timeout(30)

QUICK = Timeouts(connect=0.3, read=0.3, write=0.3, pool=0.3)


def probe(sink: MemorySink, **config: Any) -> ProbeTransport:
    config.setdefault("retry", None)
    limits = config.pop("limits", None)
    return ProbeTransport(ProbeConfig(service="checkout", **config), sink, limits=limits)


def only_event(sink: MemorySink) -> ProbeEvent:
    events = sink.events
    assert len(events) == 1, events
    event = events[0]
    # Every event the probe emits passes the worker's own validation.
    assert decode_event(encode_event(event)) == event
    return event


async def test_ok_event_fields(upstream) -> None:
    sink = MemorySink()
    async with httpx.AsyncClient(transport=probe(sink), base_url=upstream.base) as client:
        response = await client.get("/ok")
    assert response.text == "ok"
    event = only_event(sink)
    assert event.outcome == "ok" and event.status_code == 200 and event.error_class is None
    assert event.severity == "info"
    assert event.route == "/ok"
    assert event.upstream == f"127.0.0.1:{upstream.port}"
    assert event.method == "GET" and event.service == "checkout"
    assert event.bytes_received == 2 and event.body_complete
    assert event.attempt == 1 and event.breaker_state == "closed"
    assert event.internal_ip == "127.0.0.1"
    assert event.external_ip is not None
    assert ipaddress.ip_address(event.external_ip) in ipaddress.ip_network("203.0.113.0/28")
    assert event.elapsed_ms > 0 and event.ttfb_ms is not None and event.transfer_ms is not None
    assert event.ttfb_ms <= event.elapsed_ms
    assert event.pool_wait_ms == 0.0
    assert event.connect_ms is None and event.tls_ms is None  # phase timings off


@pytest.mark.parametrize(
    ("path", "outcome", "error_class", "severity"),
    [
        ("/status/404", "http_error", "http_4xx", "warning"),
        ("/status/429", "http_error", "http_4xx", "error"),
        ("/status/500", "http_error", "http_5xx", "critical"),
        ("/status/204", "ok", None, "info"),
    ],
)
async def test_status_outcomes(upstream, path, outcome, error_class, severity) -> None:
    sink = MemorySink()
    async with httpx.AsyncClient(transport=probe(sink), base_url=upstream.base) as client:
        response = await client.get(path)
    event = only_event(sink)
    assert event.status_code == response.status_code
    assert (event.outcome, event.error_class, event.severity) == (outcome, error_class, severity)
    assert event.route == "/status/{id}"
    assert event.body_complete


async def test_post_counts_bytes_sent(upstream) -> None:
    sink = MemorySink()
    async with httpx.AsyncClient(transport=probe(sink), base_url=upstream.base) as client:
        response = await client.post("/echo", content=b"x" * 1234)
    assert response.json()["body_len"] == 1234
    event = only_event(sink)
    assert event.method == "POST" and event.bytes_sent == 1234
    assert event.bytes_received == len(response.content)


async def test_huge_body_counted(upstream) -> None:
    sink = MemorySink()
    size = 5 * 1024 * 1024 + 7
    async with httpx.AsyncClient(transport=probe(sink), base_url=upstream.base) as client:
        response = await client.get("/huge", params={"size": size})
    assert len(response.content) == size
    event = only_event(sink)
    assert event.bytes_received == size and event.body_complete


async def test_read_timeout(raw) -> None:
    sink = MemorySink()
    async with httpx.AsyncClient(transport=probe(sink, timeouts=QUICK)) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(raw.silent.base + "/x")
    event = only_event(sink)
    assert (event.outcome, event.error_class) == ("timeout", "read_timeout")
    assert event.severity == "critical" and event.status_code is None
    assert 250 <= event.elapsed_ms < 2000


async def test_connect_timeout(raw) -> None:
    """A listener whose accept queue is full drops our SYN: a real connect timeout."""
    sink = MemorySink()
    async with httpx.AsyncClient(transport=probe(sink, timeouts=QUICK)) as client:
        with pytest.raises(httpx.ConnectTimeout):
            await client.get(raw.blackhole.base + "/x")
    event = only_event(sink)
    assert (event.outcome, event.error_class) == ("timeout", "connect_timeout")
    assert event.bytes_sent == 0


async def test_pool_timeout(upstream) -> None:
    """One connection, held by an open stream: the second request times out in the pool."""
    sink = MemorySink()
    transport = probe(sink, timeouts=QUICK, limits=httpx.Limits(max_connections=1))
    async with httpx.AsyncClient(transport=transport, base_url=upstream.base) as client:
        async with client.stream("GET", "/stream?chunks=3") as held:
            assert transport.stats().in_flight_total == 1
            with pytest.raises(httpx.PoolTimeout):
                await client.get("/ok")
            timed_out = only_event(sink)
            assert (timed_out.outcome, timed_out.error_class) == ("timeout", "pool_timeout")
            assert timed_out.pool_wait_ms is None  # the pool was full: not 0.0
            await held.aread()
    assert [e.outcome for e in sink.events] == ["timeout", "ok"]


async def test_total_deadline_before_headers(upstream) -> None:
    sink = MemorySink()
    transport = probe(sink, timeouts=Timeouts(total=0.3))
    async with httpx.AsyncClient(transport=transport, base_url=upstream.base) as client:
        with pytest.raises(DeadlineExceeded) as caught:
            await client.get("/slow?delay=3")
    assert isinstance(caught.value, httpx.TimeoutException)
    event = only_event(sink)
    assert (event.outcome, event.error_class) == ("timeout", "total_timeout")
    assert 250 <= event.elapsed_ms < 2000


async def test_total_deadline_during_body(upstream) -> None:
    sink = MemorySink()
    transport = probe(sink, timeouts=Timeouts(total=0.4))
    async with httpx.AsyncClient(transport=transport, base_url=upstream.base) as client:
        with pytest.raises(DeadlineExceeded):
            await client.get("/stream?chunks=40&size=100&delay=0.05")
    event = only_event(sink)
    assert (event.outcome, event.error_class) == ("timeout", "total_timeout")
    assert event.status_code == 200 and not event.body_complete
    assert 0 < event.bytes_received < 4000


async def test_connection_refused(raw) -> None:
    sink = MemorySink()
    async with httpx.AsyncClient(transport=probe(sink)) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(raw.refused + "/x")
    event = only_event(sink)
    assert (event.outcome, event.error_class) == ("connect_error", "connection_refused")
    assert event.internal_ip is None and event.external_ip is None


async def test_dns_failure() -> None:
    sink = MemorySink()
    async with httpx.AsyncClient(transport=probe(sink)) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("http://no-such-host.invalid/orders/42")
    event = only_event(sink)
    assert (event.outcome, event.error_class) == ("connect_error", "dns_failure")
    assert event.upstream == "no-such-host.invalid:80" and event.route == "/orders/{id}"


async def test_tls_failure(upstream) -> None:
    """TLS to a plain-HTTP port fails in the handshake."""
    sink = MemorySink()
    async with httpx.AsyncClient(transport=probe(sink)) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"https://127.0.0.1:{upstream.port}/ok")
    event = only_event(sink)
    assert (event.outcome, event.error_class) == ("connect_error", "tls_error")
    assert event.upstream == f"127.0.0.1:{upstream.port}"


async def test_protocol_error(raw) -> None:
    sink = MemorySink()
    async with httpx.AsyncClient(transport=probe(sink)) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(raw.garbage.base + "/x")
    event = only_event(sink)
    assert (event.outcome, event.error_class) == ("protocol_error", "remote_protocol_error")


async def test_body_cut_by_peer(raw) -> None:
    sink = MemorySink()
    async with httpx.AsyncClient(transport=probe(sink)) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(raw.close_early.base + "/x")
    event = only_event(sink)
    assert (event.outcome, event.error_class) == ("protocol_error", "remote_protocol_error")
    assert event.status_code == 200 and event.bytes_received == 10 and not event.body_complete


async def test_cancelled_before_headers(upstream) -> None:
    sink = MemorySink()
    async with httpx.AsyncClient(transport=probe(sink), base_url=upstream.base) as client:
        task = asyncio.create_task(client.get("/slow?delay=5"))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        event = only_event(sink)
        assert (event.outcome, event.error_class) == ("cancelled", "cancelled")
        assert event.severity == "warning" and event.status_code is None
        # The probe gave the breaker permit back and the gauge is at rest.
        stats = client._transport.stats()  # type: ignore[attr-defined]
        assert stats.in_flight_total == 0 and stats.breakers[0].calls_in_window == 0


async def test_cancelled_during_body(upstream) -> None:
    sink = MemorySink()
    got_some = asyncio.Event()

    async def reader(client: httpx.AsyncClient) -> None:
        async with client.stream("GET", "/stream?chunks=100&size=100&delay=0.05") as response:
            async for _ in response.aiter_raw():
                got_some.set()

    async with httpx.AsyncClient(transport=probe(sink), base_url=upstream.base) as client:
        task = asyncio.create_task(reader(client))
        await got_some.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    event = only_event(sink)
    assert (event.outcome, event.error_class) == ("cancelled", "cancelled")
    assert event.status_code == 200 and not event.body_complete
    assert 0 < event.bytes_received < 10_000


async def test_partial_read_then_close(upstream) -> None:
    sink = MemorySink()
    async with httpx.AsyncClient(transport=probe(sink), base_url=upstream.base) as client:
        async with client.stream("GET", "/stream?chunks=10&size=1000&delay=0.01") as response:
            async for _ in response.aiter_raw():
                break
    event = only_event(sink)
    assert event.outcome == "ok" and event.status_code == 200
    assert not event.body_complete and 0 < event.bytes_received < 10_000
    assert event.severity == "warning"


async def test_streamed_to_the_end(upstream) -> None:
    sink = MemorySink()
    async with httpx.AsyncClient(transport=probe(sink), base_url=upstream.base) as client:
        async with client.stream("GET", "/stream?chunks=5&size=100&delay=0.05") as response:
            chunks = [chunk async for chunk in response.aiter_raw()]
            # The event is out at EOF, before the caller closes the response.
            event = only_event(sink)
    assert sum(map(len, chunks)) == 500
    assert event.body_complete and event.bytes_received == 500
    assert event.transfer_ms is not None and event.transfer_ms >= 150
    assert event.elapsed_ms >= 200


async def test_response_never_closed_is_reported_on_collection(upstream) -> None:
    sink = MemorySink()
    transport = probe(sink)
    async with httpx.AsyncClient(transport=transport, base_url=upstream.base) as client:
        response = await client.send(client.build_request("GET", "/stream"), stream=True)
        assert sink.events == []
        del response
        gc.collect()
        await asyncio.sleep(0)  # the drain is scheduled on the loop
        event = only_event(sink)
        assert event.outcome == "ok" and not event.body_complete and event.bytes_received == 0
        stats = transport.stats()
        assert stats.orphaned_responses == 1 and stats.in_flight_total == 0


async def test_response_collected_in_another_thread_is_reported_on_the_loop(upstream) -> None:
    """The collector may find a dropped response in any thread (the emitter's, a worker's):
    the orphan is still drained on the transport's event loop, not at its next request."""
    sink = MemorySink()
    transport = probe(sink)
    async with httpx.AsyncClient(transport=transport, base_url=upstream.base) as client:
        response = await client.send(client.build_request("GET", "/stream"), stream=True)
        held = [response]
        del response

        def collect_elsewhere() -> None:
            held.clear()
            gc.collect()

        collector = threading.Thread(target=collect_elsewhere)
        collector.start()
        collector.join()
        assert sink.events == []  # queued by __del__ in that thread, not drained there
        await asyncio.sleep(0)  # the drain was handed to this loop (call_soon_threadsafe)
        event = only_event(sink)
        assert event.outcome == "ok" and not event.body_complete
        assert transport.stats().orphaned_responses == 1


async def test_trace_context_continued_from_request_header(upstream) -> None:
    sink = MemorySink()
    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    async with httpx.AsyncClient(transport=probe(sink), base_url=upstream.base) as client:
        response = await client.get("/echo", headers={"traceparent": incoming})
    sent = [v for k, v in response.json()["headers"] if k == "traceparent"]
    assert len(sent) == 1  # replaced, not added
    parsed = parse_traceparent(sent[0])
    event = only_event(sink)
    assert parsed is not None
    assert parsed.trace_id == event.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert parsed.parent_id == event.request_id != "00f067aa0ba902b7"
    assert parsed.flags == 1


async def test_trace_context_from_ambient_context(upstream) -> None:
    sink = MemorySink()
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    async with httpx.AsyncClient(transport=probe(sink), base_url=upstream.base) as client:
        with trace_context(trace_id=trace_id):
            first = await client.get("/echo")
            second = await client.get("/echo")
        third = await client.get("/echo")
    events = sink.events
    assert [e.trace_id for e in events[:2]] == [trace_id, trace_id]
    assert events[2].trace_id != trace_id
    assert len({e.request_id for e in events}) == 3
    assert len({e.logical_request_id for e in events}) == 3
    for response, event in zip((first, second, third), events, strict=True):
        header = dict(response.json()["headers"])["traceparent"]
        assert header == f"00-{event.trace_id}-{event.request_id}-01"


async def test_invalid_incoming_traceparent_starts_a_new_trace(upstream) -> None:
    sink = MemorySink()
    bad = "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
    async with httpx.AsyncClient(transport=probe(sink), base_url=upstream.base) as client:
        response = await client.get("/echo", headers={"traceparent": bad})
    event = only_event(sink)
    assert event.trace_id != "0" * 32
    assert dict(response.json()["headers"])["traceparent"].split("-")[1] == event.trace_id


async def test_phase_timings(upstream) -> None:
    sink = MemorySink()
    seen: list[str] = []

    async def user_trace(name: str, info: dict[str, Any]) -> None:
        seen.append(name)

    transport = probe(sink, phase_timings=True)
    async with httpx.AsyncClient(transport=transport, base_url=upstream.base) as client:
        await client.get("/ok", extensions={"trace": user_trace})
        await client.get("/ok")
    fresh, reused = sink.events
    assert fresh.connect_ms is not None and fresh.connect_ms > 0
    assert fresh.pool_wait_ms is not None and fresh.pool_wait_ms >= 0
    assert fresh.tls_ms is None  # plain HTTP
    assert fresh.internal_ip == "127.0.0.1"
    assert reused.connect_ms is None and reused.pool_wait_ms is not None
    assert "connection.connect_tcp.started" in seen  # the caller's own trace still runs


class _Spy(httpx.AsyncHTTPTransport):
    closed = 0

    async def aclose(self) -> None:
        self.closed += 1
        await super().aclose()


async def test_stats_gauge_and_close_passthrough(upstream) -> None:
    sink = MemorySink()
    inner = _Spy()
    transport = ProbeTransport(
        ProbeConfig(service="svc"), sink, transport=inner, limits=httpx.Limits(max_connections=100)
    )
    client = httpx.AsyncClient(transport=transport, base_url=upstream.base)
    async with client.stream("GET", "/stream?chunks=2") as response:
        stats = transport.stats()
        assert stats.in_flight == {f"127.0.0.1:{upstream.port}": 1}
        assert stats.pool_limit == 100
        await response.aread()
    stats = transport.stats()
    assert stats.in_flight == {} and stats.events_emitted == 1 and stats.internal_errors == 0
    await client.aclose()
    assert inner.closed == 1


class _Boom(httpx.AsyncBaseTransport):
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise self.exc


class _Weird(Exception):
    pass


async def test_foreign_exception_passes_unchanged() -> None:
    sink = MemorySink()
    exc = _Weird("inner transport bug")
    transport = ProbeTransport(ProbeConfig(service="svc", retry=None), sink, transport=_Boom(exc))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(_Weird) as caught:
            await client.get("http://example.test/a")
    assert caught.value is exc
    event = only_event(sink)
    assert (event.outcome, event.error_class) == ("transport_error", "unexpected")
    assert event.pool_wait_ms is None  # a foreign transport: pool limit unknown


class _BrokenSink:
    def __init__(self) -> None:
        self.calls = 0

    def submit(self, event: ProbeEvent) -> None:
        self.calls += 1
        raise RuntimeError("sink down")


async def test_probe_failure_never_reaches_the_caller(upstream) -> None:
    sink = _BrokenSink()
    transport = ProbeTransport(ProbeConfig(service="svc", retry=None), sink)
    async with httpx.AsyncClient(transport=transport, base_url=upstream.base) as client:
        for _ in range(3):
            assert (await client.get("/ok")).text == "ok"
    stats = transport.stats()
    assert sink.calls == 3 and stats.internal_errors == 3 and stats.events_emitted == 0


async def test_breaker_open_error_is_a_transport_error(upstream) -> None:
    assert issubclass(CircuitOpenError, httpx.TransportError)
    assert issubclass(DeadlineExceeded, httpx.TimeoutException)


async def test_one_line_client(upstream) -> None:
    sink = MemorySink()
    async with ProbeTransport.client("checkout", sink, base_url=upstream.base) as client:
        body = json.loads((await client.get("/echo?token=secret")).text)
    assert body["query"] == "token=secret"
    assert only_event(sink).route == "/echo"


class _RaisingBreaker:
    name = "fake"
    _state = "open"  # not CLOSED: the probe asks it

    def try_acquire(self) -> bool:
        raise RuntimeError("breaker bug")

    acquire = try_acquire


async def test_probe_bug_in_setup_sends_the_request_unobserved(upstream, monkeypatch) -> None:
    sink = MemorySink()
    transport = ProbeTransport(ProbeConfig(service="svc"), sink)

    def broken_route(*args: object) -> str:
        raise RuntimeError("route bug")

    async with httpx.AsyncClient(transport=transport, base_url=upstream.base) as client:
        monkeypatch.setattr(transport._core.routes, "route", broken_route)
        assert (await client.get("/ok")).text == "ok"
        monkeypatch.undo()
        assert transport._core.breakers is not None
        monkeypatch.setattr(transport._core.breakers, "get", lambda upstream: _RaisingBreaker())
        assert (await client.get("/ok")).text == "ok"
    stats = transport.stats()
    assert stats.internal_errors == 2 and sink.events == [] and stats.in_flight_total == 0


async def test_tls_phase_timings(tls_upstream) -> None:
    sink = MemorySink()
    context = ssl.create_default_context(cafile=tls_upstream.ca_file)
    transport = ProbeTransport(
        ProbeConfig(service="svc", phase_timings=True),
        sink,
        transport=httpx.AsyncHTTPTransport(verify=context),
    )
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(tls_upstream.server.url("/ok"))).text == "ok"
    event = only_event(sink)
    assert event.upstream == f"127.0.0.1:{tls_upstream.server.port}"
    assert event.tls_ms is not None and event.tls_ms > 0
    assert event.connect_ms is not None and event.ttfb_ms is not None
    assert event.ttfb_ms >= event.connect_ms + event.tls_ms
    assert event.internal_ip == "127.0.0.1"


async def test_tls_untrusted_certificate(tls_upstream) -> None:
    sink = MemorySink()
    async with httpx.AsyncClient(transport=probe(sink)) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(tls_upstream.server.url("/ok"))
    assert (only_event(sink).outcome, only_event(sink).error_class) == (
        "connect_error",
        "tls_error",
    )


async def test_redirect_hops_are_events_of_one_trace(upstream) -> None:
    sink = MemorySink()
    seen: list[str] = []

    async def user_trace(name: str, info: dict[str, Any]) -> None:
        seen.append(name)

    transport = probe(sink, phase_timings=True)
    async with httpx.AsyncClient(transport=transport, base_url=upstream.base) as client:
        response = await client.get(
            "/redirect?to=/echo", follow_redirects=True, extensions={"trace": user_trace}
        )
    hop, final = sink.events
    assert (hop.status_code, hop.route, final.route) == (302, "/redirect", "/echo")
    assert hop.trace_id == final.trace_id and hop.logical_request_id != final.logical_request_id
    sent = dict(response.json()["headers"])["traceparent"]
    assert sent == f"00-{final.trace_id}-{final.request_id}-01"
    # The caller's trace callback ran once per hop, not once per hop per earlier hop.
    assert seen.count("http11.receive_response_headers.complete") == 2
