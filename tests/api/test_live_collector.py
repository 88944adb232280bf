"""The live feed's Prometheus figures: clients, buffered against the bound, drops counted."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from api.live.collector import LiveCollector
from api.live.hub import HubFull, LiveHub
from tests.api.test_live_hub import msg


def _value(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value(name)


def test_buffered_stays_under_its_bound_and_drops_are_counted() -> None:
    hub = LiveHub(max_clients=1, buffer_size=3)
    registry = CollectorRegistry()
    registry.register(LiveCollector(hub))
    assert _value(registry, "egresswatch_live_clients") == 0
    assert _value(registry, "egresswatch_live_buffer_capacity_messages") == 0

    hub.connect()
    hub.publish([msg(f"/r{i}") for i in range(5)])
    assert _value(registry, "egresswatch_live_clients") == 1
    assert _value(registry, "egresswatch_live_buffered_messages") == 3
    assert _value(registry, "egresswatch_live_buffer_capacity_messages") == 3
    assert _value(registry, "egresswatch_live_dropped_messages_total") == 2
    try:
        hub.connect()
    except HubFull:
        pass
    assert _value(registry, "egresswatch_live_refused_clients_total") == 1
    assert _value(registry, "egresswatch_live_shed_events_total") == 0
    text = generate_latest(registry).decode()
    assert "# TYPE egresswatch_live_dropped_messages_total counter" in text


def test_drops_of_clients_that_left_still_count() -> None:
    hub = LiveHub(buffer_size=1)
    registry = CollectorRegistry()
    registry.register(LiveCollector(hub))
    client = hub.connect()
    hub.publish([msg("/a"), msg("/b"), msg("/c")])
    hub.disconnect(client)
    assert _value(registry, "egresswatch_live_dropped_messages_total") == 2
    assert _value(registry, "egresswatch_live_clients") == 0
