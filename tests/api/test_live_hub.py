"""LiveHub, its clients and the protocol's encoders: pure, no sockets, no broker."""

from __future__ import annotations

import gc
import json
import random
import tracemalloc
from typing import Any

import msgspec
import pytest

from api.live.feed import KafkaLiveFeed
from api.live.hub import HubFull, LiveHub
from api.live.protocol import (
    Ack,
    FilterRequest,
    InvalidMessage,
    LiveFilter,
    LiveMessage,
    Pong,
    alert_message,
    control,
    decode_client_message,
    event_message,
)
from pipeline.envelope import encode_batch
from pipeline.schema import encode_event
from tables.alerting import AlertRecord, Observed, encode_alert
from tests.eventgen import make_event

T0 = 1_764_000_000.0
_rng = random.Random(7)


def event(route: str = "/orders/{id}", *, status: int = 200, elapsed_ms: float = 5.0, **kw):
    return make_event(
        route=route, started_at=T0, elapsed_ms=elapsed_ms, status_code=status, rng=_rng, **kw
    )


def msg(route: str = "/a", *, severity: int = 0, service: str = "checkout") -> LiveMessage:
    text = json.dumps({"type": "event", "route": route, "trace_id": "1" * 32, "pad": "x" * 400})
    return LiveMessage("event", severity, service, route, text, "1" * 32)


def alert(**kw) -> AlertRecord:
    fields: dict[str, Any] = {
        "alert_id": "a" * 32,
        "status": "firing",
        "rule": "latency",
        "kind": "latency_p99",
        "severity": "page",
        "service": "checkout",
        "route": "/pay",
        "method": "POST",
        "observed": Observed(value=900.0, by_view={"5m": 900.0}),
        "threshold": 500.0,
        "objective": None,
        "burn_rate": None,
        "views": ("5m", "1m"),
        "started_at": T0,
        "fired_at": T0,
        "resolved_at": None,
        "evaluated_at": T0,
        "example_trace_ids": ("b" * 32,),
        "trace_id": "b" * 32,
        "request_id": "c" * 16,
        "message": "FIRING",
    }
    fields.update(kw)
    return AlertRecord(**fields)


def lines(frame: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in frame]


# -- encoders ---------------------------------------------------------------------------------


def test_event_message_is_the_event_with_its_type_and_ids():
    ev = event(status=503)
    message = event_message(ev)
    body = json.loads(message.text)
    assert body == {"type": "event", **json.loads(encode_event(ev))}
    assert body["trace_id"] == ev.trace_id and len(body["request_id"]) == 16
    assert (message.kind, message.rank, message.route) == ("event", 3, "/orders/{id}")
    assert "\n" not in message.text


def test_alert_message_carries_the_record_and_passes_any_min_severity():
    record = alert()
    message = alert_message(record)
    assert json.loads(message.text) == {"type": "alert", **json.loads(encode_alert(record))}
    assert LiveFilter(min_severity="critical").matches(message)


def test_session_messages_carry_trace_and_fresh_request_ids():
    a = json.loads(control("ping", "f" * 32, id=1))
    b = json.loads(control("ping", "f" * 32, id=2))
    assert a["trace_id"] == b["trace_id"] == "f" * 32
    assert len(a["request_id"]) == 16 and a["request_id"] != b["request_id"]


# -- filters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("live_filter", "expected"),
    [
        (LiveFilter(), ["info", "warning", "error", "critical"]),
        (LiveFilter(min_severity="warning"), ["warning", "error", "critical"]),
        (LiveFilter(min_severity="critical"), ["critical"]),
    ],
)
def test_min_severity_follows_the_schema_order(live_filter, expected):
    by_name = {
        "info": event(status=200),
        "warning": event(status=404),
        "error": event(status=429),
        "critical": event(status=503),
    }
    for name, ev in by_name.items():
        assert ev.severity == name
    kept = [name for name, ev in by_name.items() if live_filter.matches(event_message(ev))]
    assert kept == expected


def test_route_is_exact_or_a_glob_and_service_exact():
    live_filter = LiveFilter(route="/orders/*", service="checkout")
    assert live_filter.matches(msg("/orders/{id}"))
    assert not live_filter.matches(msg("/users/{id}"))
    assert not live_filter.matches(msg("/orders/{id}", service="search"))
    assert LiveFilter(route="/orders").matches(msg("/orders"))
    assert not LiveFilter(route="/orders").matches(msg("/orders/{id}"))


def test_rollup_alerts_match_every_route_filter():
    rollup = alert_message(alert(route="*", method="*"))
    assert LiveFilter(route="/anything").matches(rollup)
    assert not LiveFilter(route="/x", service="other").matches(rollup)
    assert not LiveFilter(route="/x").matches(alert_message(alert(route="/pay")))


def test_filter_from_query_parameters():
    assert LiveFilter.parse(min_severity="error", route="", service=None) == LiveFilter("error")
    with pytest.raises(InvalidMessage) as info:
        LiveFilter.parse(min_severity="loud", route=None, service=None)
    assert info.value.code == "invalid_filter"
    with pytest.raises(InvalidMessage):
        LiveFilter.parse(min_severity=None, route="/" * 300, service=None)


def test_client_messages_decode_or_name_the_problem():
    assert decode_client_message('{"type":"pong","id":3}') == Pong(id=3)
    assert decode_client_message(b'{"type":"ack","count":10}') == Ack(count=10)
    request = decode_client_message('{"type":"filter","min_severity":"error","extra":1}')
    assert request == FilterRequest(min_severity="error")
    for data, code in [
        ('{"type":"subscribe"}', "unknown_type"),
        ('{"type":"ack","count":-1}', "invalid_message"),
        ("not json", "malformed_json"),
        ('{"type":"pong","pad":"' + "x" * 5000 + '"}', "too_large"),
    ]:
        with pytest.raises(InvalidMessage) as info:
            decode_client_message(data)
        assert info.value.code == code


# -- clients: drop-oldest, notice, bounds -----------------------------------------------------


def test_drop_oldest_and_one_dropped_notice_before_the_gap():
    hub = LiveHub(buffer_size=3)
    client = hub.connect()
    hub.publish([msg(f"/r{i}") for i in range(5)])
    assert len(client.buffer) == 3 and client.high_water == 3
    assert client.dropped_total == 2
    frame = lines(client.take_frame(100))
    assert frame[0]["type"] == "dropped"
    assert (frame[0]["count"], frame[0]["total"]) == (2, 2)
    assert frame[0]["trace_id"] == client.trace_id
    assert [m["route"] for m in frame[1:]] == ["/r2", "/r3", "/r4"]  # the newest survive
    hub.publish([msg("/r5")])
    assert [m["route"] for m in lines(client.take_frame(100))] == ["/r5"]  # no new notice
    assert hub.stats()["dropped_total"] == 2


def test_a_flood_never_grows_a_client_past_its_cap():
    """Memory stays bounded: the buffer holds at most ``buffer_size`` messages, whatever
    arrives, and what it dropped is released."""
    hub = LiveHub(buffer_size=200)
    slow = hub.connect()
    gc.collect()
    tracemalloc.start()
    try:
        hub.publish([msg(f"/r{i}") for i in range(1_000)])
        before, _ = tracemalloc.get_traced_memory()
        for batch in range(50):
            hub.publish([msg(f"/b{batch}/{i}") for i in range(1_000)])
            assert len(slow.buffer) <= 200
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert slow.high_water == 200
    assert slow.dropped_total == 51_000 - 200
    assert after - before < 100_000, f"grew {after - before} B over 50,000 messages"


def test_window_holds_data_back_until_acked():
    hub = LiveHub(buffer_size=100, window=4)
    client = hub.connect()
    hub.publish([msg(f"/r{i}") for i in range(10)])
    assert len(client.take_frame(3)) == 3  # no ack yet: no window
    client.ack(0)  # the client acks: window of 4 from now on, 3 in flight
    assert len(client.take_frame(100)) == 1
    assert client.take_frame(100) == []
    client.ack(2)
    assert len(client.take_frame(100)) == 2
    client.ping()  # session messages bypass the window
    assert lines(client.take_frame(100))[0]["type"] == "ping"
    client.ack(10**9)  # never more than sent
    assert client.acked == client.sent_total == 6


def test_new_filter_applies_to_what_is_buffered():
    hub = LiveHub()
    client = hub.connect()
    hub.publish([msg("/a", severity=0), msg("/b", severity=3), msg("/c", severity=1)])
    removed = client.set_filter(LiveFilter(min_severity="warning"))
    assert removed == 1
    assert [m["route"] for m in lines(client.take_frame(100))] == ["/b", "/c"]


def test_fan_out_follows_each_clients_filter():
    hub = LiveHub()
    everyone = hub.connect()
    critical = hub.connect(LiveFilter(min_severity="critical"))
    search = hub.connect(LiveFilter(service="search"))
    hub.publish([msg("/a", severity=3), msg("/b", service="search"), msg("/c")])
    assert [m.route for m in everyone.buffer] == ["/a", "/b", "/c"]
    assert [m.route for m in critical.buffer] == ["/a"]
    assert [m.route for m in search.buffer] == ["/b"]


def test_the_hub_refuses_clients_beyond_its_bound():
    hub = LiveHub(max_clients=2)
    first = hub.connect()
    hub.connect()
    with pytest.raises(HubFull):
        hub.connect()
    assert hub.refused_total == 1
    hub.disconnect(first)
    hub.connect()
    assert len(hub) == 2


# -- feed decoding ----------------------------------------------------------------------------


def test_feed_turns_envelopes_and_alerts_into_messages():
    feed = KafkaLiveFeed(LiveHub(), bootstrap="127.0.0.1:1", probe_topic="p", alerts_topic="a")
    good = [encode_event(event(f"/r{i}")) for i in range(3)]
    value = encode_batch("svc@host:1", 0, T0, [good[0], b'{"nope":1}', good[1], good[2]])
    messages = feed.messages_of("p", value)
    assert [m.route for m in messages] == ["/r0", "/r1", "/r2"]
    assert feed.invalid == 1 and feed.events == 3
    assert feed.messages_of("p", b"garbage") == [] and feed.invalid == 2
    assert [m.kind for m in feed.messages_of("a", encode_alert(alert()))] == ["alert"]
    assert feed.messages_of("a", msgspec.json.encode({"x": 1})) == [] and feed.invalid == 3
    assert feed.messages_of("p", None) == []


def test_feed_sheds_beyond_its_event_budget_and_tells_every_client():
    now = [100.0]
    hub = LiveHub()
    client = hub.connect()
    feed = KafkaLiveFeed(
        hub,
        bootstrap="127.0.0.1:1",
        probe_topic="p",
        alerts_topic="a",
        max_events_per_s=10,
        clock=lambda: now[0],
    )

    def record(n: int) -> bytes:
        return encode_batch("s@h:1", 0, T0, [encode_event(event(f"/r{i}")) for i in range(n)])

    assert len(feed.messages_of("p", record(8))) == 8
    assert len(feed.messages_of("p", record(8))) == 8  # the bucket runs into debt (-6)
    assert feed.messages_of("p", record(5)) == []  # spent: skipped undecoded
    assert feed.shed == 5 and feed.events == 16
    assert [m.kind for m in feed.messages_of("a", encode_alert(alert()))] == ["alert"]
    now[0] += 1.0  # refilled to 4 tokens
    hub.publish(feed.messages_of("p", record(3)))
    notice, *data = lines(client.take_frame(100))
    assert notice["type"] == "dropped" and (notice["count"], notice["shed"]) == (0, 5)
    assert len(data) == 3
