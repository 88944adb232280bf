"""The sink's Prometheus families: present, named by convention, following the writer."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from sinks.metrics import FAMILIES, SinkCollector
from tests.sinks.fakes import critical_events


async def test_families_follow_the_writer(make_writer, store, clock) -> None:
    writer = make_writer(max_records=2)
    registry = CollectorRegistry()
    registry.register(SinkCollector(writer))
    store.down = True
    for offset in range(6):
        writer.add_events("t", 0, offset, critical_events(1, seed=offset))
        await writer.flush_due()
    assert registry.get_sample_value("egresswatch_sink_breaker_state") == 2  # open
    clock.advance(7)  # past the breaker's 5 s wait: half-open
    text = generate_latest(registry).decode()
    value = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert value["egresswatch_sink_spooled_batches_total"] == 3
    assert value["egresswatch_sink_breaker_state"] == 1
    assert value["egresswatch_sink_spool_bytes"] > 0
    assert 0 < value["egresswatch_sink_spool_fill_ratio"] < 1
    assert value["egresswatch_sink_upload_lag_seconds"] >= 7
    for name, kind, _, _ in FAMILIES:
        assert name in value
        assert name.endswith("_total") == (kind == "counter")
    assert registry.get_sample_value("egresswatch_sink_put_failures_total") == 2
