"""``/v1/ws/events`` end to end in-process: Starlette's TestClient for the protocol, a real
uvicorn server and ``websockets`` client for socket backpressure; plus the dashboard files."""

from __future__ import annotations

import asyncio
import json
import random
import re
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.websockets import WebSocketDisconnect

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from api.live.hub import LiveHub
from api.live.protocol import event_message
from api.live.routes import STATIC_DIR, live_routes
from api.live.ws import CLOSE_CROSS_ORIGIN, CLOSE_FULL, CLOSE_HEARTBEAT, CLOSE_INVALID_FILTER
from tests.eventgen import make_event
from tests.ports import free_port

T0 = 1_764_000_000.0
_rng = random.Random(11)


def event(route: str = "/orders/{id}", *, status: int = 200, service: str = "checkout"):
    return make_event(
        service=service, route=route, started_at=T0, elapsed_ms=3.0, status_code=status, rng=_rng
    )


class Session:
    """A TestClient WebSocket read message by message (a frame may hold several)."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.pending: list[dict[str, Any]] = []

    def next(self) -> dict[str, Any]:
        while not self.pending:
            self.pending = [json.loads(line) for line in self.ws.receive_text().split("\n")]
        message = self.pending.pop(0)
        assert re.fullmatch("[0-9a-f]{32}", message["trace_id"]), message
        assert re.fullmatch("[0-9a-f]{16}", message["request_id"]), message
        return message

    def until(self, kind: str) -> dict[str, Any]:
        while (message := self.next())["type"] != kind:
            pass
        return message

    def data(self, n: int) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        while len(got) < n:
            message = self.next()
            if message["type"] in ("event", "alert"):
                got.append(message)
        return got

    def send(self, **message) -> None:
        self.ws.send_text(json.dumps(message))


@pytest.fixture
def hub() -> LiveHub:
    return LiveHub(max_clients=3, buffer_size=50, window=10)


def make_client(hub: LiveHub, **kw) -> TestClient:
    app = Starlette(routes=live_routes(hub, **kw))
    return TestClient(app)


@pytest.fixture
def client(hub: LiveHub) -> Iterator[TestClient]:
    with make_client(hub, ping_interval_s=30, ping_timeout_s=30) as test_client:
        yield test_client


def portal(test_client: TestClient) -> Any:
    assert test_client.portal is not None, "use the TestClient as a context manager"
    return test_client.portal


def publish(test_client: TestClient, hub: LiveHub, events) -> None:
    """Publish on the app's loop thread (the hub is not thread-safe, by design)."""
    messages = [event_message(e) for e in events]
    portal(test_client).call(hub.publish, messages)


def wait_clients(test_client: TestClient, hub: LiveHub, n: int) -> None:
    for _ in range(200):
        if portal(test_client).call(len, hub) == n:
            return
        portal(test_client).call(asyncio.sleep, 0.01)
    raise AssertionError(f"hub has {len(hub)} clients, expected {n}")


def test_hello_then_events_matching_the_connect_filter(client, hub):
    url = "/v1/ws/events?min_severity=warning&route=/orders/*"
    with client.websocket_connect(url) as ws:
        session = Session(ws)
        hello = session.until("hello")
        assert hello["filter"] == {"min_severity": "warning", "route": "/orders/*", "service": None}
        assert (hello["protocol"], hello["buffer"], hello["window"]) == (1, 50, 10)
        publish(
            client,
            hub,
            [
                event("/orders/{id}", status=200),  # info: filtered out
                event("/users/{id}", status=503),  # other route: filtered out
                event("/orders/{id}", status=404),
                event("/orders/{id}/items", status=503),
            ],
        )
        got = session.data(2)
        assert [(m["route"], m["severity"]) for m in got] == [
            ("/orders/{id}", "warning"),
            ("/orders/{id}/items", "critical"),
        ]


def test_filter_changed_mid_session(client, hub):
    with client.websocket_connect("/v1/ws/events") as ws:
        session = Session(ws)
        session.until("hello")
        publish(client, hub, [event("/a"), event("/b", service="search")])
        assert [m["route"] for m in session.data(2)] == ["/a", "/b"]
        session.send(type="filter", service="search", min_severity="critical")
        confirmed = session.until("filter")
        assert confirmed["filter"] == {
            "min_severity": "critical",
            "route": None,
            "service": "search",
        }
        publish(
            client,
            hub,
            [
                event("/a", status=503),
                event("/b", service="search"),
                event("/c", service="search", status=500),
            ],
        )
        assert [m["route"] for m in session.data(1)] == ["/c"]
        session.send(type="filter")  # all fields absent: everything again
        session.until("filter")
        publish(client, hub, [event("/d")])
        assert [m["route"] for m in session.data(1)] == ["/d"]


def test_bad_messages_get_an_error_and_the_session_goes_on(client, hub):
    with client.websocket_connect("/v1/ws/events") as ws:
        session = Session(ws)
        session.until("hello")
        ws.send_text("{not json")
        assert session.until("error")["code"] == "malformed_json"
        session.send(type="filter", min_severity="loud")
        assert session.until("error")["code"] == "invalid_message"
        session.send(type="subscribe")
        assert session.until("error")["code"] == "unknown_type"
        publish(client, hub, [event("/still")])
        assert session.data(1)[0]["route"] == "/still"


def test_invalid_filter_at_connect_is_refused(client):
    with client.websocket_connect("/v1/ws/events?min_severity=loud") as ws:
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_text()
    assert info.value.code == CLOSE_INVALID_FILTER


def test_cross_origin_pages_are_refused(client):
    headers = {"origin": "http://evil.example"}
    with client.websocket_connect("/v1/ws/events", headers=headers) as ws:
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_text()
    assert info.value.code == CLOSE_CROSS_ORIGIN
    same = {"origin": "http://testserver"}
    with client.websocket_connect("/v1/ws/events", headers=same) as ws:
        assert Session(ws).until("hello")


def test_a_full_hub_refuses_with_1013(client, hub):
    with (
        client.websocket_connect("/v1/ws/events") as a,
        client.websocket_connect("/v1/ws/events") as b,
        client.websocket_connect("/v1/ws/events") as c,
    ):
        for ws in (a, b, c):
            Session(ws).until("hello")
        with client.websocket_connect("/v1/ws/events") as refused:
            with pytest.raises(WebSocketDisconnect) as info:
                refused.receive_text()
        assert info.value.code == CLOSE_FULL
        assert "max 3" in (info.value.reason or "")
        assert hub.refused_total == 1
    wait_clients(client, hub, 0)


def test_heartbeat_answered_keeps_the_session(hub):
    with (
        make_client(hub, ping_interval_s=0.1, ping_timeout_s=0.3) as client,
        client.websocket_connect("/v1/ws/events") as ws,
    ):
        session = Session(ws)
        session.until("hello")
        for _ in range(6):  # ~0.6 s, twice the timeout
            ping = session.until("ping")
            session.send(type="pong", id=ping["id"])
        publish(client, hub, [event("/alive")])
        assert session.data(1)[0]["route"] == "/alive"


def test_heartbeat_timeout_closes_a_silent_client(hub):
    with (
        make_client(hub, ping_interval_s=0.1, ping_timeout_s=0.3) as client,
        client.websocket_connect("/v1/ws/events") as ws,
    ):
        session = Session(ws)
        kinds = []
        with pytest.raises(WebSocketDisconnect) as info:
            while True:
                kinds.append(session.next()["type"])
        assert info.value.code == CLOSE_HEARTBEAT
        assert kinds[0] == "hello" and "ping" in kinds
        wait_clients(client, hub, 0)


def test_slow_consumer_drop_oldest_with_notice_and_bounded_buffer(client, hub):
    """The client acks 0 then reads nothing: 10 messages in flight (the window), at most 50
    buffered (the cap), the rest dropped oldest first and announced when it reads again."""
    with client.websocket_connect("/v1/ws/events") as ws:
        session = Session(ws)
        session.until("hello")
        session.send(type="ack", count=0)
        wait_clients(client, hub, 1)
        (live,) = hub.clients
        for _ in range(200):
            if portal(client).call(lambda: live.acked) == 0:
                break
            portal(client).call(asyncio.sleep, 0.01)
        publish(client, hub, [event(f"/b0/{i}") for i in range(50)])
        first = session.data(10)
        assert [m["route"] for m in first] == [f"/b0/{i}" for i in range(10)]
        portal(client).call(asyncio.sleep, 0.2)
        assert live.sent_total == 10  # the window: nothing more until acked
        for batch in range(1, 20):
            publish(client, hub, [event(f"/b{batch}/{i}") for i in range(50)])
            assert len(live.buffer) <= 50
        assert live.high_water == 50
        session.send(type="ack", count=10)
        notice = session.until("dropped")
        assert notice["count"] == 1_000 - 10 - 50 == notice["total"]
        assert notice["trace_id"] == live.trace_id
        rest = session.data(10)
        assert [m["route"] for m in rest] == [f"/b19/{i}" for i in range(10)]  # the newest


async def test_real_socket_slow_reader_keeps_server_memory_bounded():
    """Through uvicorn and a real socket, with a client that neither reads nor acks: the
    sender blocks on the socket (backpressure), the hub's buffer stays at its cap, the
    overflow is dropped and counted, and the client is told when it reads again."""
    hub = LiveHub(buffer_size=100)
    app = Starlette(routes=live_routes(hub, ping_interval_s=60, ping_timeout_s=60))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off")
    )
    serving = asyncio.ensure_future(server.serve())
    try:
        async with asyncio.timeout(60):
            while not server.started:
                await asyncio.sleep(0.02)
            url = f"ws://127.0.0.1:{port}/v1/ws/events"
            async with websockets.connect(url, compression=None) as ws:
                while not len(hub):
                    await asyncio.sleep(0.01)
                (live,) = hub.clients
                published = 0
                while live.dropped_total < 5_000:
                    hub.publish([event_message(event(f"/n{published + i}")) for i in range(200)])
                    published += 200
                    assert len(live.buffer) <= 100
                    await asyncio.sleep(0.002)
                    assert published < 200_000, "the socket never pushed back"
                assert live.high_water == 100
                dropped = live.dropped_total
                seen_notice = 0
                last_route = None
                while last_route != f"/n{published - 1}":
                    for line in str(await ws.recv()).split("\n"):
                        message = json.loads(line)
                        if message["type"] == "dropped":
                            seen_notice += message["count"]
                        elif message["type"] == "event":
                            last_route = message["route"]
                assert seen_notice == dropped
    finally:
        server.should_exit = True
        await serving


def test_dashboard_page_and_assets_are_served_locally(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for asset in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert asset.startswith("/static/"), asset
        assert client.get(asset).status_code == 200
    for name in ("dashboard.html", "dashboard.js", "dashboard.css"):
        text = (STATIC_DIR / name).read_text()
        assert not re.search(r"https?://", text), f"{name} loads something remote"
