"""The probe's fast paths against real sockets: the same events and the same requests as the
plain paths they stand in for.

- records (built into events off the caller's path) vs events built by the transport, for a
  sink that only takes events;
- ``Headers._list`` / ``URL._uri_reference`` (httpx internals, checked at import) vs the
  public API the probe falls back to;
- the attempt taking the place of httpx's own body wrapper vs wrapping a foreign stream:
  the caller sees httpx's exceptions either way.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest

from pipeline.probe import (
    MemorySink,
    ProbeConfig,
    ProbeTransport,
    SyncProbeTransport,
    _attempt,
    _core,
    parse_traceparent,
    trace_context,
)
from pipeline.probe import transport as transport_module
from pipeline.probe._record import Record
from pipeline.probe._streams import _AsyncAttempt, _SyncAttempt
from pipeline.probe.config import Timeouts
from pipeline.probe.sink import record_submitter
from pipeline.schema import ProbeEvent, decode_event, encode_event

pytestmark = pytest.mark.timeout(60)


def stable(event: ProbeEvent, routes: dict[str, str]) -> ProbeEvent:
    """``event`` without what differs between two runs of the same requests."""
    assert decode_event(encode_event(event)) == event  # valid for the workers too
    return msgspec.structs.replace(
        event,
        route=routes.get(event.route, event.route),
        started_at=1_767_225_600.0,
        elapsed_ms=0.0,
        trace_id="1" * 32,
        request_id="1" * 16,
        logical_request_id="1" * 16,
        ttfb_ms=None,
        transfer_ms=None,
    )


class EventsOnly:
    """A sink with ``submit`` only: the transport builds the events itself."""

    def __init__(self) -> None:
        self.events: list[ProbeEvent] = []

    def submit(self, event: ProbeEvent) -> None:
        assert type(event) is ProbeEvent
        self.events.append(event)


async def _traffic(sink: Any, base: str, key: str) -> None:
    transport = ProbeTransport(ProbeConfig(service="checkout"), sink)
    async with httpx.AsyncClient(transport=transport, base_url=base) as client:
        await client.get("/ok")
        await client.get("/status/404")
        await client.post("/echo", content=b"x" * 300)
        await client.get(f"/flaky/{key}?fail=1")  # a 503 retried: two attempts
        async with client.stream("GET", "/stream?chunks=5&size=100") as response:
            async for _ in response.aiter_bytes():
                break  # closed before EOF


async def test_records_give_the_same_events_as_the_transport_building_them(upstream) -> None:
    fast, plain = MemorySink(), EventsOnly()
    assert record_submitter(fast) is not None and record_submitter(plain) is None
    await _traffic(fast, upstream.base, "hot-path-a")
    assert all(type(item) is Record for item in fast._events)  # records until read
    await _traffic(plain, upstream.base, "hot-path-b")
    keyless = {"/flaky/hot-path-a": "/flaky", "/flaky/hot-path-b": "/flaky"}
    fast_events = [stable(e, keyless) for e in fast.events]
    assert fast_events == [stable(e, keyless) for e in plain.events]
    assert [e.attempt for e in fast_events] == [1, 1, 1, 1, 2, 1]
    assert not fast.events[-1].body_complete


async def test_traceparent_is_taken_off_the_request_once_sent(upstream) -> None:
    sink = MemorySink()
    transport = ProbeTransport(ProbeConfig(service="checkout"), sink)
    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    async with httpx.AsyncClient(transport=transport, base_url=upstream.base) as client:
        plain = await client.get("/echo", headers={"x-caller": "1"})
        hop = await client.get("/redirect?to=/echo")  # not followed: a 302
        given = await client.get("/echo", headers={"traceparent": incoming})
    ours, redirect, continued = sink.events
    sent = dict(plain.json()["headers"])["traceparent"]
    assert sent == f"00-{ours.trace_id}-{ours.request_id}-01"  # on the wire
    # ... and off the caller's request again, which has the headers the caller built.
    assert "traceparent" not in plain.request.headers
    assert plain.request.headers["x-caller"] == "1"
    # A redirect keeps it, for httpx to copy to the next hop (one trace across hops).
    assert hop.request.headers["traceparent"] == f"00-{redirect.trace_id}-{redirect.request_id}-01"
    # A caller's own traceparent is replaced (continued), not taken off.
    assert continued.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert given.request.headers["traceparent"] == dict(given.json()["headers"])["traceparent"]


def test_sync_traceparent_is_taken_off_the_request_once_sent(upstream) -> None:
    sink = MemorySink()
    transport = SyncProbeTransport(ProbeConfig(service="checkout"), sink)
    with httpx.Client(transport=transport, base_url=upstream.base) as client:
        plain = client.get("/echo")
        hop = client.get("/redirect?to=/echo")
    ours, redirect = sink.events
    assert dict(plain.json()["headers"])["traceparent"].split("-")[2] == ours.request_id
    assert "traceparent" not in plain.request.headers
    assert hop.request.headers["traceparent"].split("-")[2] == redirect.request_id


@pytest.fixture(params=["fast", "public"])
def httpx_access(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Both ways the probe reads a request: httpx internals, or the public API."""
    assert _attempt._FAST_HEADERS and _core._FAST_URL  # the pinned httpx has them
    if request.param == "public":
        monkeypatch.setattr(_attempt, "_FAST_HEADERS", False)
        monkeypatch.setattr(_core, "_FAST_URL", False)
    yield request.param


async def test_trace_context_either_way(upstream, httpx_access: str) -> None:
    sink = MemorySink()
    transport = ProbeTransport(ProbeConfig(service="checkout", retry=None), sink)
    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
    async with httpx.AsyncClient(transport=transport, base_url=upstream.base) as client:
        own = (await client.get("/echo?q=1")).json()["headers"]
        given = (await client.get("/echo", headers={"traceparent": incoming})).json()["headers"]
        with trace_context(trace_id="a" * 32):
            ambient = (await client.get("/echo")).json()["headers"]
        # Two values are one invalid header, as httpx's Headers.get joins them: new trace.
        doubled = httpx.Headers([("traceparent", incoming), ("traceparent", incoming)])
        joined = (await client.get("/echo", headers=doubled)).json()["headers"]
    events = sink.events
    sent = [[v for k, v in h if k == "traceparent"] for h in (own, given, ambient, joined)]
    assert all(len(values) == 1 for values in sent)  # replaced, never added twice
    parsed = [parse_traceparent(values[0]) for values in sent]
    assert [p.parent_id for p in parsed if p] == [e.request_id for e in events]
    assert [e.trace_id for e in events[1:3]] == ["4bf92f3577b34da6a3ce929d0e0e4736", "a" * 32]
    assert parsed[1] is not None and parsed[1].flags == 0  # the caller's flags carried over
    assert events[3].trace_id != "4bf92f3577b34da6a3ce929d0e0e4736"
    assert {e.route for e in events} == {"/echo"}
    assert {e.upstream for e in events} == {f"127.0.0.1:{upstream.port}"}


def test_upstream_and_route_either_way(monkeypatch: pytest.MonkeyPatch) -> None:
    urls = [
        "http://Example.test/a/42?token=x#frag",
        "https://example.test:8443/users/3f2a9c1e-1111-2222-3333-444455556666/orders",
        "http://[::1]:8080/",
        "https://example.test",
        "ws://example.test/feed/7",
    ]
    core = ProbeTransport(ProbeConfig(service="checkout"), MemorySink())._core
    fast = [core.resolve(httpx.URL(url))[:2] for url in urls]
    monkeypatch.setattr(_core, "_FAST_URL", False)
    public = ProbeTransport(ProbeConfig(service="checkout"), MemorySink())._core
    assert [public.resolve(httpx.URL(url))[:2] for url in urls] == fast
    assert fast == [
        ("example.test:80", "/a/{id}"),
        ("example.test:8443", "/users/{uuid}/orders"),
        ("[::1]:8080", "/"),
        ("example.test:443", "/"),
        ("example.test:80", "/feed/{id}"),
    ]


def test_overflow_answers_are_counted_per_request() -> None:
    """The (upstream, path) cache never hides a request given the overflow route."""
    transport = ProbeTransport(
        ProbeConfig(service="checkout", max_routes_per_upstream=1), MemorySink()
    )
    core = transport._core
    for _ in range(3):
        assert core.resolve(httpx.URL("http://a.test/one"))[1] == "/one"
        assert core.resolve(httpx.URL("http://a.test/two"))[1] == "/{overflow}"
    assert transport.stats().route_overflows == 3


async def test_async_body_takes_the_place_of_httpx_wrapper(upstream, raw) -> None:
    sink = MemorySink()
    transport = ProbeTransport(ProbeConfig(service="checkout", retry=None), sink)
    async with httpx.AsyncClient(transport=transport) as client:
        async with client.stream("GET", upstream.url("/stream?chunks=3&size=10")) as response:
            attempt = response.stream._stream  # type: ignore[union-attr]  # httpx's bound stream
            assert isinstance(attempt, _AsyncAttempt) and attempt._raw
            chunks = response.aiter_raw()
            first = await chunks.__anext__()
            inner = weakref.ref(attempt._iter)  # httpcore's iterator, a generator
            gc.disable()  # freed at EOF by its last reference going, not by the collector
            try:
                assert first + b"".join([c async for c in chunks]) == b"s" * 30
                assert inner() is None
            finally:
                gc.enable()
            with pytest.raises(StopAsyncIteration):  # read again past EOF: no second event
                await attempt.__anext__()
        # httpcore's error, as httpx raises it: RemoteProtocolError, not httpcore's.
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await client.get(raw.close_early.base + "/x")
    assert caught.value.__cause__ is not None
    ok, cut = sink.events
    assert (ok.bytes_received, ok.body_complete) == (30, True)
    assert (cut.outcome, cut.bytes_received, cut.body_complete) == ("protocol_error", 10, False)


class _Replay(httpx.AsyncBaseTransport):
    """A foreign inner transport: its body is not httpx's wrapper, so it is wrapped."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        async def body() -> Any:
            yield b"abc"
            raise httpx.ReadError("gone", request=request)

        class Stream(httpx.AsyncByteStream):
            def __aiter__(self) -> Any:
                return body()

        return httpx.Response(200, stream=Stream(), request=request)


async def test_async_foreign_body_is_wrapped_as_it_is() -> None:
    sink = MemorySink()
    config = ProbeConfig(service="checkout", retry=None)
    transport = ProbeTransport(config, sink, transport=_Replay())
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ReadError):
            await client.get("http://foreign.test/x")
    (event,) = sink.events
    assert (event.outcome, event.error_class, event.bytes_received) == (
        "transport_error",
        "read_error",
        3,
    )


def test_sync_body_takes_the_place_of_httpx_wrapper(upstream, raw) -> None:
    sink = MemorySink()
    transport = SyncProbeTransport(ProbeConfig(service="checkout", retry=None), sink)
    with httpx.Client(transport=transport) as client:
        with client.stream("GET", upstream.url("/stream?chunks=3&size=10")) as response:
            attempt = response.stream._stream  # type: ignore[union-attr]
            assert isinstance(attempt, _SyncAttempt) and attempt._raw
            chunks = response.iter_raw()
            first = next(chunks)
            inner = weakref.ref(attempt._iter)
            gc.disable()
            try:
                assert first + b"".join(chunks) == b"s" * 30
                assert inner() is None
            finally:
                gc.enable()
            with pytest.raises(StopIteration):
                next(attempt)
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(raw.close_early.base + "/x")
    ok, cut = sink.events
    assert (ok.bytes_received, ok.body_complete) == (30, True)
    assert (cut.outcome, cut.bytes_received, cut.body_complete) == ("protocol_error", 10, False)


def _targets(upstream: Any, raw: Any, key: str) -> list[str]:
    """One URL per outcome kind the inner transport can produce."""
    return [
        upstream.url("/ok"),
        upstream.url("/status/404"),
        upstream.url(f"/flaky/{key}?fail=1"),  # a 503, retried
        upstream.url("/stream?chunks=3&size=10"),
        raw.silent.base + "/read-timeout",
        raw.close_early.base + "/cut",
        raw.garbage.base + "/not-http",
        raw.refused + "/refused",
    ]


def _seen(outcome: httpx.Response | BaseException) -> tuple[Any, ...]:
    """What a caller can tell apart: the status and body, or the exception, its message and
    the kind of its cause."""
    if isinstance(outcome, httpx.Response):
        return ("response", outcome.status_code, outcome.content)
    cause = outcome.__cause__
    return (type(outcome), str(outcome), type(cause) if cause is not None else None)


def _config(total: float | None) -> ProbeConfig:
    # Without a total deadline the async transport sends inline; with one, through AsyncDirect.
    return ProbeConfig(service="checkout", timeouts=Timeouts(read=0.3, total=total))


async def _async_run(
    upstream: Any, raw: Any, key: str, total: float | None
) -> tuple[list[Any], list[ProbeEvent]]:
    sink = MemorySink()
    seen: list[tuple[Any, ...]] = []
    async with httpx.AsyncClient(transport=ProbeTransport(_config(total), sink)) as client:
        for url in _targets(upstream, raw, key):
            try:
                seen.append(_seen(await client.get(url)))
            except httpx.HTTPError as exc:
                seen.append(_seen(exc))
    return seen, [stable(e, {f"/flaky/{key}": "/flaky"}) for e in sink.events]


def _sync_run(
    upstream: Any, raw: Any, key: str, total: float | None
) -> tuple[list[Any], list[ProbeEvent]]:
    sink = MemorySink()
    seen: list[tuple[Any, ...]] = []
    with httpx.Client(transport=SyncProbeTransport(_config(total), sink)) as client:
        for url in _targets(upstream, raw, key):
            try:
                seen.append(_seen(client.get(url)))
            except httpx.HTTPError as exc:
                seen.append(_seen(exc))
    return seen, [stable(e, {f"/flaky/{key}": "/flaky"}) for e in sink.events]


_KINDS = [
    ("response", 200),
    ("response", 404),
    ("response", 200),  # the 503 retried
    ("response", 200),
    httpx.ReadTimeout,
    httpx.RemoteProtocolError,
    httpx.RemoteProtocolError,
    httpx.ConnectError,
]


def _kinds(seen: list[tuple[Any, ...]]) -> list[Any]:
    return [s[:2] if s[0] == "response" else s[0] for s in seen]


@pytest.mark.parametrize("total", [None, 30.0], ids=["inline", "deadline"])
async def test_async_sending_directly_is_sending_through_httpx(
    upstream, raw, monkeypatch: pytest.MonkeyPatch, total: float | None
) -> None:
    """_direct sends through httpx's pool itself: the caller sees what httpx's transport
    gives (responses, exception types, messages, causes) and the events are the same."""
    direct = ProbeTransport(_config(total), MemorySink())
    assert direct._pool is not None
    assert direct._send.__self__ is not direct._inner  # type: ignore[attr-defined]
    seen, events = await _async_run(upstream, raw, f"direct-async-a-{total is None}", total)
    monkeypatch.setattr(transport_module, "direct_pool", lambda transport: None)
    plain = ProbeTransport(_config(total), MemorySink())
    assert plain._pool is None
    assert plain._send.__self__ is plain._inner  # type: ignore[attr-defined]
    again = await _async_run(upstream, raw, f"direct-async-b-{total is None}", total)
    assert again == (seen, events)
    assert _kinds(seen) == _KINDS
    assert len(events) == 13  # 8 requests, five of them retried once


@pytest.mark.parametrize("total", [None, 30.0], ids=["inline", "deadline"])
def test_sync_sending_directly_is_sending_through_httpx(
    upstream, raw, monkeypatch: pytest.MonkeyPatch, total: float | None
) -> None:
    seen, events = _sync_run(upstream, raw, f"direct-sync-a-{total is None}", total)
    monkeypatch.setattr(transport_module, "direct_pool", lambda transport: None)
    plain = SyncProbeTransport(_config(total), MemorySink())
    assert plain._send.__self__ is plain._inner  # type: ignore[attr-defined]
    assert _sync_run(upstream, raw, f"direct-sync-b-{total is None}", total) == (seen, events)
    assert _kinds(seen) == _KINDS
    assert len(events) == 13
