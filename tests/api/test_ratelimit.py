"""Rate limiting: token buckets per client, 429 + Retry-After, a bounded table (I3)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket

from api.app import create_api
from api.middleware.ratelimit import TokenBuckets, client_of
from pipeline.settings import WorkerSettings
from tests.api.conftest import FakeClock, MakeClient, assert_error
from tests.api.fakes import FakeBackend


def test_burst_then_refill() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate_per_s=2.0, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)
    assert buckets.take("b") == 0.0  # clients are independent
    clock.advance(0.5)
    assert buckets.take("a") == 0.0
    assert buckets.take("a") == pytest.approx(0.5)
    clock.advance(100)
    assert [buckets.take("a") for _ in range(4)][-1] > 0  # refills to burst, not beyond
    assert buckets.limited_total == 3


def test_full_table_evicts_only_idle_buckets_else_overflows() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate_per_s=1.0, burst=2, max_clients=2, clock=clock)
    buckets.take("a")
    buckets.take("b")
    # Both buckets are below burst: the newcomer shares the overflow bucket.
    assert buckets.take("c") == 0.0
    assert buckets.take("d") == 0.0
    assert buckets.take("e") > 0  # overflow bucket (burst 2) is empty now
    assert len(buckets) == 2 and buckets.overflow_total == 3 and buckets.evicted_total == 0
    clock.advance(1.0)  # "a" (least recently used) is full again: it may go
    assert buckets.take("c") == 0.0
    assert len(buckets) == 2 and buckets.evicted_total == 1
    # "a" comes back with a fresh (full) bucket when there is room; losing it lost nothing.
    clock.advance(10.0)
    assert [buckets.take("a") for _ in range(2)] == [0.0, 0.0]


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        TokenBuckets(rate_per_s=0, burst=1)
    with pytest.raises(ValueError, match="burst"):
        TokenBuckets(rate_per_s=1, burst=0)
    with pytest.raises(ValueError, match="max_clients"):
        TokenBuckets(rate_per_s=1, burst=1, max_clients=0)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 50), st.floats(0, 2, allow_nan=False)), min_size=1, max_size=300
    ),
    max_clients=st.integers(1, 8),
    burst=st.integers(1, 5),
)
def test_table_is_bounded_and_a_lone_client_gets_its_rate(
    steps: list[tuple[int, float]], max_clients: int, burst: int
) -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate_per_s=3.0, burst=burst, max_clients=max_clients, clock=clock)
    lone = TokenBuckets(rate_per_s=3.0, burst=burst, max_clients=max_clients, clock=clock)
    granted = 0
    for client, dt in steps:
        clock.advance(dt)
        buckets.take(f"c{client}")
        assert len(buckets) <= max_clients
        granted += lone.take("only") == 0.0
    elapsed = sum(dt for _, dt in steps)
    assert granted <= burst + math.floor(elapsed * 3.0 + 1e-9)
    assert lone.limited_total + granted == len(steps)


def test_429_with_retry_after_then_recovers(make_client: MakeClient) -> None:
    clock = FakeClock()
    client = make_client(api_rate_per_s=0.5, api_burst=3, clock=clock)
    for _ in range(3):
        assert client.get("/v1/health/live").status_code == 200
    response = client.get("/v1/metrics/network")
    body = assert_error(response, 429, "rate_limited")
    assert response.headers["retry-after"] == "2"  # one token per 2 s
    assert "2 s" in body["error"]["message"]
    clock.advance(1.9)
    assert client.get("/v1/health/live").headers.get("retry-after") == "1"
    clock.advance(0.2)
    assert client.get("/v1/health/live").status_code == 200


def test_clients_are_limited_separately(backend: FakeBackend) -> None:
    clock = FakeClock()
    app = create_api(WorkerSettings(api_rate_per_s=1, api_burst=1), backend=backend, clock=clock)
    with (
        TestClient(app, client=("10.0.0.1", 1)) as one,
        TestClient(app, client=("10.0.0.2", 2)) as two,
    ):
        assert one.get("/v1/health/live").status_code == 200
        assert one.get("/v1/health/live").status_code == 429
        assert two.get("/v1/health/live").status_code == 200
        # X-Forwarded-For is not trusted by default: it cannot buy a new bucket.
        spoofed = one.get("/v1/health/live", headers={"X-Forwarded-For": "192.0.2.9"})
        assert spoofed.status_code == 429


def test_trusted_proxy_forwarded_for(make_client: MakeClient) -> None:
    clock = FakeClock()
    client = make_client(
        api_rate_per_s=1, api_burst=1, api_trusted_proxies="10.1.2.3, 10.9.9.9", clock=clock
    )
    a = {"X-Forwarded-For": "203.0.113.7, 10.9.9.9"}
    b = {"X-Forwarded-For": "spoofed, 203.0.113.8"}
    assert client.get("/v1/health/live", headers=a).status_code == 200
    assert client.get("/v1/health/live", headers=a).status_code == 429
    assert client.get("/v1/health/live", headers=b).status_code == 200


def test_client_of() -> None:
    scope = {
        "type": "http",
        "client": ("10.0.0.5", 1),
        "headers": [(b"x-forwarded-for", b"1.2.3.4")],
    }
    assert client_of(scope) == "10.0.0.5"
    assert client_of(scope, frozenset({"10.0.0.5"})) == "1.2.3.4"
    assert client_of({"type": "http", "client": None, "headers": []}) == "unknown"
    only_proxies = {**scope, "headers": [(b"x-forwarded-for", b"10.0.0.5")]}
    assert client_of(only_proxies, frozenset({"10.0.0.5"})) == "10.0.0.5"


def test_rate_zero_turns_limiting_off(make_client: MakeClient) -> None:
    client = make_client(api_rate_per_s=0, api_burst=1)
    assert all(client.get("/v1/health/live").status_code == 200 for _ in range(20))
    assert "egresswatch_api_rate_limit_clients 0.0" in client.get("/metrics").text


async def _ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.close()


def test_websocket_handshake_is_limited(make_client: MakeClient) -> None:
    client = make_client(
        api_rate_per_s=1,
        api_burst=1,
        clock=FakeClock(),
        extra_routes=[WebSocketRoute("/v1/ws", _ws)],
    )
    with client.websocket_connect("/v1/ws"):
        pass
    with pytest.raises(WebSocketDenialResponse) as denied:
        with client.websocket_connect("/v1/ws"):
            pass
    assert denied.value.status_code == 429
    assert denied.value.headers["retry-after"] == "1"
    assert denied.value.json()["error"]["code"] == "rate_limited"
