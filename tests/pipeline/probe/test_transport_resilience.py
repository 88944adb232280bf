"""Retries, retry budget and circuit breaker, as the probe runs and records them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from itertools import count

import httpx
import pytest

from pipeline.probe import (
    BreakerConfig,
    CircuitOpenError,
    MemorySink,
    ProbeConfig,
    ProbeTransport,
    RetryConfig,
    SyncProbeTransport,
    Timeouts,
)
from pipeline.schema import decode_event, encode_event
from tests.pipeline.probe.conftest import Upstream

pytestmark = pytest.mark.timeout(30)

FAST_RETRY = RetryConfig(max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.02)
_keys = count()


def flaky(upstream: Upstream, fail: int) -> str:
    return upstream.url(f"/flaky/k{next(_keys)}?fail={fail}")


def probe(sink: MemorySink, **config) -> ProbeTransport:
    config.setdefault("retry", FAST_RETRY)
    return ProbeTransport(ProbeConfig(service="checkout", **config), sink)


def assert_valid(sink: MemorySink) -> None:
    for event in sink.events:
        assert decode_event(encode_event(event)) == event


async def test_retry_until_success(upstream) -> None:
    sink = MemorySink()
    transport = probe(sink)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(flaky(upstream, fail=2))
    assert response.status_code == 200 and response.text == "recovered"
    events = sink.events
    assert_valid(sink)
    assert [e.attempt for e in events] == [1, 2, 3]
    assert [e.status_code for e in events] == [503, 503, 200]
    assert [e.outcome for e in events] == ["http_error", "http_error", "ok"]
    assert [e.severity for e in events] == ["critical", "critical", "warning"]
    assert len({e.logical_request_id for e in events}) == 1
    assert len({e.trace_id for e in events}) == 1
    assert len({e.request_id for e in events}) == 3
    assert all(e.body_complete for e in events)  # failed bodies read before retrying
    assert transport.stats().retries == 2


async def test_retries_exhausted_return_the_last_response(upstream) -> None:
    sink = MemorySink()
    async with httpx.AsyncClient(transport=probe(sink)) as client:
        response = await client.get(upstream.url("/status/503"))
    assert response.status_code == 503 and response.text == "status"
    assert [(e.attempt, e.status_code) for e in sink.events] == [(1, 503), (2, 503), (3, 503)]


async def test_connect_errors_retried_then_raised(raw) -> None:
    sink = MemorySink()
    async with httpx.AsyncClient(transport=probe(sink)) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(raw.refused)
    assert [(e.attempt, e.error_class) for e in sink.events] == [
        (1, "connection_refused"),
        (2, "connection_refused"),
        (3, "connection_refused"),
    ]
    assert_valid(sink)


async def test_read_timeouts_retried_for_get(raw) -> None:
    sink = MemorySink()
    transport = probe(sink, timeouts=Timeouts(read=0.1))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(raw.silent.base)
    assert [e.error_class for e in sink.events] == ["read_timeout"] * 3


async def test_post_not_retried_on_5xx_but_on_refused(upstream, raw) -> None:
    sink = MemorySink()
    async with httpx.AsyncClient(transport=probe(sink)) as client:
        assert (await client.post(upstream.url("/status/503"), content=b"x")).status_code == 503
        assert len(sink.events) == 1
        with pytest.raises(httpx.ConnectError):
            await client.post(raw.refused, content=b"x")
    assert [e.attempt for e in sink.events] == [1, 1, 2, 3]
    assert all(e.bytes_sent == 0 for e in sink.events[1:])  # nothing left


async def test_streamed_body_is_retried_only_when_nothing_was_sent(upstream, raw) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"chunk"

    sink = MemorySink()
    async with httpx.AsyncClient(transport=probe(sink)) as client:
        response = await client.put(upstream.url("/status/503"), content=body())
        assert response.status_code == 503 and len(sink.events) == 1  # cannot replay
        with pytest.raises(httpx.ConnectError):
            await client.put(raw.refused, content=body())
    assert len(sink.events) == 4


async def test_budget_refusal_is_counted_and_the_last_event_stands(upstream) -> None:
    sink = MemorySink()
    stingy = RetryConfig(max_attempts=3, budget_ratio=0.0, budget_min_retries_per_s=0.0)
    transport = probe(sink, retry=stingy)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(upstream.url("/status/503"))
    assert response.status_code == 503
    (event,) = sink.events
    assert event.outcome == "http_error" and event.body_complete
    stats = transport.stats()
    assert stats.budget_refusals == 1 and stats.retries == 0
    assert stats.retry_budget is not None and stats.retry_budget.refused_total == 1


async def test_retry_after_longer_than_backoff_max_stops_retrying() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503, headers={"retry-after": "120"})

    sink = MemorySink()
    transport = ProbeTransport(
        ProbeConfig(service="svc", retry=FAST_RETRY), sink, transport=httpx.MockTransport(handler)
    )
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get("http://upstream.test/x")).status_code == 503
    assert calls == 1 and len(sink.events) == 1


async def test_cancelled_during_backoff(upstream) -> None:
    sink = MemorySink()
    slow_retry = RetryConfig(max_attempts=3, backoff_base_s=10.0, backoff_max_s=10.0)
    async with httpx.AsyncClient(transport=probe(sink, retry=slow_retry)) as client:
        task = asyncio.create_task(client.get(upstream.url("/status/503")))
        for _ in range(200):
            if sink.events:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # The first attempt ended with its event; no second attempt started.
    assert [(e.attempt, e.status_code) for e in sink.events] == [(1, 503)]


async def test_breaker_opens_short_circuits_then_half_opens(upstream) -> None:
    sink = MemorySink()
    breaker = BreakerConfig(
        sliding_window_size=4,
        minimum_number_of_calls=4,
        wait_duration_in_open_s=0.3,
        permitted_calls_in_half_open=1,
    )
    transport = probe(sink, retry=None, breaker=breaker)
    async with httpx.AsyncClient(transport=transport, base_url=upstream.base) as client:
        for _ in range(4):
            assert (await client.get("/status/500")).status_code == 500
        with pytest.raises(CircuitOpenError) as caught:
            await client.get("/ok")
        assert caught.value.upstream == f"127.0.0.1:{upstream.port}"
        with pytest.raises(httpx.TransportError):
            await client.get("/ok")
        await asyncio.sleep(0.35)
        assert (await client.get("/ok")).status_code == 200  # the half-open trial
        assert (await client.get("/ok")).status_code == 200
    assert_valid(sink)
    states = [(e.outcome, e.breaker_state) for e in sink.events]
    assert states == [
        ("http_error", "closed"),
        ("http_error", "closed"),
        ("http_error", "closed"),
        ("http_error", "closed"),
        ("breaker_open", "open"),
        ("breaker_open", "open"),
        ("ok", "half_open"),
        ("ok", "closed"),
    ]
    short = sink.events[4]
    assert short.error_class == "breaker_open" and short.severity == "critical"
    assert short.bytes_sent == 0 and short.status_code is None and short.route == "/ok"
    stats = transport.stats()
    assert stats.short_circuits == 2
    (snapshot,) = stats.breakers
    assert snapshot.state == "closed" and snapshot.short_circuited_total == 2
    assert [(a, b) for a, b, _ in snapshot.transitions] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


async def test_breaker_is_per_upstream(upstream, raw) -> None:
    sink = MemorySink()
    breaker = BreakerConfig(sliding_window_size=2, minimum_number_of_calls=2)
    async with httpx.AsyncClient(transport=probe(sink, retry=None, breaker=breaker)) as client:
        for _ in range(2):
            with pytest.raises(httpx.ConnectError):
                await client.get(raw.refused)
        with pytest.raises(CircuitOpenError):
            await client.get(raw.refused)
        assert (await client.get(upstream.url("/ok"))).status_code == 200


def test_sync_retries_and_breaker(upstream) -> None:
    sink = MemorySink()
    breaker = BreakerConfig(sliding_window_size=3, minimum_number_of_calls=3)
    transport = SyncProbeTransport(
        ProbeConfig(service="svc", retry=FAST_RETRY, breaker=breaker), sink
    )
    with httpx.Client(transport=transport) as client:
        assert client.get(flaky(upstream, fail=1)).text == "recovered"
        assert [e.attempt for e in sink.events] == [1, 2]
        sink.clear()
        started = time.perf_counter()
        assert client.get(upstream.url("/status/502")).status_code == 502
        assert time.perf_counter() - started < 2
        # The window of 3 holds 503, 200, 502: 2/3 failed, the breaker opens, and the probe
        # does not retry into an open breaker: the caller gets the 502.
        assert [e.status_code for e in sink.events] == [502]
        with pytest.raises(CircuitOpenError):
            client.get(upstream.url("/ok"))
    assert sink.events[-1].outcome == "breaker_open"


def test_sync_streamed_body_not_replayed(upstream) -> None:
    def body() -> Iterator[bytes]:
        yield b"abc"

    sink = MemorySink()
    transport = SyncProbeTransport(ProbeConfig(service="svc", retry=FAST_RETRY), sink)
    with httpx.Client(transport=transport) as client:
        assert client.post(upstream.url("/echo"), content=body()).json()["body_len"] == 3
        assert client.put(upstream.url("/status/503"), content=body()).status_code == 503
    assert [e.attempt for e in sink.events] == [1, 1]
